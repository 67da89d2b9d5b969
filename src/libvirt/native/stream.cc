// virStream* as a bidirectional byte stream (a domain's console, through virDomainOpenConsole).
//
// How the data moves: the stream is non-blocking and registered with libvirt's default event
// loop (virStreamEventAddCallback), whose thread (addon.cc) runs the callback below. On
// READABLE it drains virStreamRecv until libvirt has nothing more (-2) and hands each chunk
// to JS through the stream's own thread-safe function; on WRITABLE it writes what JS queued
// with send(). That is how virsh's console works, and it keeps worker threads free: a console
// may stay open for hours.
//
// Backpressure: received bytes not yet delivered to JS are counted; above kHighWater the
// stream stops asking for READABLE (libvirt then buffers, and the daemon stops reading the
// pty), and JS turns it back on once deliveries caught up or when the consumer resumes. The
// send queue is bounded by the caller: send() resolves when libvirt took the bytes.
//
// Lifetime: the JS handle, the event callback and each job hold a shared reference to the
// state; the virStreamPtr is aborted (if still active) and freed on a worker when the last
// one goes, since both can be RPCs.
#include <cstring>
#include <deque>

#include "method.h"

namespace lv {

namespace {

constexpr size_t kChunk = 64 * 1024;
constexpr size_t kHighWater = 1024 * 1024;
constexpr size_t kLowWater = 256 * 1024;

const napi_type_tag kStreamTag = {0x6c69627669727406ULL, 0x73747265616d2121ULL};

enum class MsgKind : uint32_t { Data = 0, End = 1, Error = 2, Sent = 3 };

struct StreamMsg {
  MsgKind kind;
  std::vector<char> data;
  ErrorInfo error;
  uint32_t sent = 0;
};

struct StreamState;
void UpdateEvents(StreamState* s);

// What the event callback, the JS channel and the jobs share. It does not own the stream (the
// callback data libvirt holds may outlive every other reference until the stream is disposed,
// so owning it from there would be a cycle); `ptr` stays valid while a StreamOwner exists, and
// nothing touches it once `registered` is false and no job runs.
struct StreamState {
  virStreamPtr ptr = nullptr;
  unsigned int flags = 0;
  std::shared_ptr<ConnState> conn;

  std::mutex mutex;
  // Guarded by mutex:
  std::deque<std::vector<char>> out;
  size_t outOffset = 0;
  bool started = false;     // start() was called (once per stream)
  bool registered = false;  // the event callback is (still) registered
  bool ended = false;       // EOF or an error reached JS's queue; nothing more is read
  bool paused = false;      // the consumer asked for no data
  bool reading = false;     // a receiver exists
  int mask = -1;            // what libvirt was last asked to report

  // The channel to JS has its own lock, taken last: posting happens with `mutex` held.
  std::mutex tsfnMutex;
  napi_threadsafe_function tsfn = nullptr;

  std::atomic<size_t> undelivered{0};
  std::atomic<bool> done{false};  // finished or aborted: nothing to abort at free

  // Posts a message to JS; false once the channel is gone (the environment is shutting down).
  bool Post(StreamMsg* msg) {
    std::lock_guard<std::mutex> lock(tsfnMutex);
    if (tsfn == nullptr ||
        napi_call_threadsafe_function(tsfn, msg, napi_tsfn_nonblocking) != napi_ok) {
      delete msg;
      return false;
    }
    return true;
  }
};

// Releases the channel: the JS listener gets what was queued, then Node may exit.
void ReleaseChannel(StreamState* s) {
  std::lock_guard<std::mutex> lock(s->tsfnMutex);
  if (s->tsfn != nullptr) {
    napi_release_threadsafe_function(s->tsfn, napi_tsfn_release);
    s->tsfn = nullptr;
  }
}

// The stream's one owner (the JS handle; jobs hold it while they run). When the last
// reference goes, the callback is removed and the stream aborted (unless finished) and freed,
// on a worker: both can be RPCs to the daemon.
struct StreamOwner {
  std::shared_ptr<StreamState> s;
  StreamOwner() = default;
  StreamOwner(const StreamOwner&) = delete;
  StreamOwner& operator=(const StreamOwner&) = delete;
  ~StreamOwner() {
    struct FreeTask final : Task {
      explicit FreeTask(std::shared_ptr<StreamState> st) : s(std::move(st)) {}
      void Run() override {
        {
          std::lock_guard<std::mutex> lock(s->mutex);
          s->ended = true;
          s->out.clear();
          if (s->registered) {
            s->registered = false;
            if (virStreamEventRemoveCallback(s->ptr) < 0) virResetLastError();
          }
        }
        ReleaseChannel(s.get());
        if (!s->done.exchange(true) && virStreamAbort(s->ptr) < 0) virResetLastError();
        virStreamFree(s->ptr);
        delete this;
      }
      std::shared_ptr<StreamState> s;
    };
    if (s && s->ptr != nullptr) WorkerPool::Get().Post(new FreeTask(std::move(s)));
  }
};

struct StreamBox {
  std::shared_ptr<StreamOwner> owner;
};

void FinalizeStream(napi_env, void* data, void*) { delete static_cast<StreamBox*>(data); }

StreamBox* UnwrapStream(Napi::Env env, Napi::Value v) {
  bool ok = false;
  if (v.Type() == napi_external) napi_check_object_type_tag(env, v, &kStreamTag, &ok);
  if (!ok)
    throw Napi::TypeError::New(env, "stream must be a stream handle returned by the libvirt binding");
  void* data = nullptr;
  napi_get_value_external(env, v, &data);
  return static_cast<StreamBox*>(data);
}

std::shared_ptr<StreamOwner> LiveStream(Napi::Env env, Napi::Value v, bool needConn = true) {
  StreamBox* box = UnwrapStream(env, v);
  if (!box->owner)
    throw Rejection{ErrorInfo::Make(VIR_ERR_INVALID_STREAM, VIR_FROM_STREAMS,
                                    "the stream handle was freed")};
  if (needConn && box->owner->s->conn && box->owner->s->conn->ptr == nullptr)
    throw Rejection{
        ErrorInfo::Make(VIR_ERR_INVALID_CONN, VIR_FROM_NONE, "the connection is closed")};
  return box->owner;
}

// The event mask follows the state: READABLE while someone reads, nothing is paused and JS
// is not too far behind; WRITABLE only while bytes wait (a remote stream is always writable,
// so asking for it with nothing to send would spin the event loop). Called with the mutex
// held. virStreamEventUpdateCallback only updates the event loop's bookkeeping (and wakes
// it): no I/O, so the JS thread may call it too.
void UpdateEventsLocked(StreamState* s) {
  if (!s->registered) return;
  int mask = 0;
  if (s->reading && !s->ended && !s->paused && s->undelivered.load() < kHighWater)
    mask |= VIR_STREAM_EVENT_READABLE;
  if (!s->out.empty()) mask |= VIR_STREAM_EVENT_WRITABLE;
  if (mask == s->mask) return;
  s->mask = mask;
  if (virStreamEventUpdateCallback(s->ptr, mask) < 0) virResetLastError();
}

void UpdateEvents(StreamState* s) {
  std::lock_guard<std::mutex> lock(s->mutex);
  UpdateEventsLocked(s);
}

// Ends delivery: the last message is already queued. Removing the callback from inside it
// is allowed (libvirt defers freeing its data until the dispatch returns).
void StopLocked(StreamState* s) {
  s->ended = true;
  s->out.clear();
  s->outOffset = 0;
  if (s->registered) {
    s->registered = false;
    if (virStreamEventRemoveCallback(s->ptr) < 0) virResetLastError();
  }
}

void EndLocked(StreamState* s) {
  StopLocked(s);
  ReleaseChannel(s);
}

void Fail(StreamState* s, ErrorInfo info) {
  auto* msg = new StreamMsg{MsgKind::Error, {}, std::move(info)};
  std::lock_guard<std::mutex> lock(s->mutex);
  if (s->ended) {
    delete msg;
    return;
  }
  s->Post(msg);
  EndLocked(s);
}

void ReadAvailable(StreamState* s) {
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(s->mutex);
      if (s->ended || s->paused || s->undelivered.load() >= kHighWater) break;
    }
    std::vector<char> buf(kChunk);
    int n = virStreamRecv(s->ptr, buf.data(), buf.size());
    if (n == -2) break;
    if (n < 0) {
      Fail(s, ErrorInfo::Capture());
      return;
    }
    if (n == 0) {
      std::lock_guard<std::mutex> lock(s->mutex);
      if (!s->ended) s->Post(new StreamMsg{MsgKind::End, {}, {}});
      EndLocked(s);
      return;
    }
    buf.resize(static_cast<size_t>(n));
    s->undelivered.fetch_add(buf.size());
    if (!s->Post(new StreamMsg{MsgKind::Data, std::move(buf), {}})) return;
  }
  UpdateEvents(s);
}

void WriteQueued(StreamState* s) {
  uint32_t completed = 0;
  for (;;) {
    // The chunk leaves the queue while it is sent: a close() on a worker may clear the queue
    // meanwhile. Only this thread takes from the front, so a rest goes back there.
    std::vector<char> chunk;
    size_t offset;
    {
      std::lock_guard<std::mutex> lock(s->mutex);
      if (s->ended || s->out.empty()) break;
      chunk = std::move(s->out.front());
      s->out.pop_front();
      offset = s->outOffset;
      s->outOffset = 0;
    }
    int n = virStreamSend(s->ptr, chunk.data() + offset, chunk.size() - offset);
    if (n < 0 && n != -2) {
      Fail(s, ErrorInfo::Capture());
      return;
    }
    size_t sent = n > 0 ? static_cast<size_t>(n) : 0;
    if (offset + sent == chunk.size()) {
      completed++;
      continue;
    }
    std::lock_guard<std::mutex> lock(s->mutex);
    if (!s->ended) {
      s->out.push_front(std::move(chunk));
      s->outOffset = offset + sent;
    }
    if (n == -2) break;
  }
  if (completed > 0) {
    auto* msg = new StreamMsg{MsgKind::Sent, {}, {}};
    msg->sent = completed;
    s->Post(msg);
  }
  UpdateEvents(s);
}

// libvirt's event-loop thread.
void OnStreamEvent(virStreamPtr, int events, void* opaque) {
  StreamState* s = static_cast<std::shared_ptr<StreamState>*>(opaque)->get();
  if (events & VIR_STREAM_EVENT_WRITABLE) WriteQueued(s);
  // ERROR and HANGUP: the next recv reports the error or the end.
  if (events & (VIR_STREAM_EVENT_READABLE | VIR_STREAM_EVENT_ERROR | VIR_STREAM_EVENT_HANGUP)) {
    bool reading;
    {
      std::lock_guard<std::mutex> lock(s->mutex);
      reading = s->reading;
    }
    if (reading) {
      ReadAvailable(s);
    } else if (events & (VIR_STREAM_EVENT_ERROR | VIR_STREAM_EVENT_HANGUP)) {
      Fail(s, ErrorInfo::Make(VIR_ERR_RPC, VIR_FROM_STREAMS, "the stream was closed"));
    }
  }
}

// libvirt drops its callback data late (for a remote stream: when the stream is disposed),
// possibly with its stream lock held; the state owns nothing of libvirt's, so deleting it is
// safe there.
void FreeCallbackData(void* opaque) { delete static_cast<std::shared_ptr<StreamState>*>(opaque); }

// The channel's context keeps the state alive until every queued message was delivered.
void FinalizeChannel(napi_env, void*, void* hint) {
  delete static_cast<std::shared_ptr<StreamState>*>(hint);
}

// JS thread: one message from the event-loop thread.
void CallJs(napi_env env, napi_value fn, void* ctx, void* data) {
  auto* msg = static_cast<StreamMsg*>(data);
  StreamState* s = static_cast<std::shared_ptr<StreamState>*>(ctx)->get();
  if (env == nullptr) {
    delete msg;
    return;
  }
  Napi::Env e(env);
  Napi::HandleScope scope(e);
  Napi::Value arg = e.Undefined();
  switch (msg->kind) {
    case MsgKind::Data: {
      size_t before = s->undelivered.fetch_sub(msg->data.size());
      arg = Napi::Buffer<char>::Copy(e, msg->data.data(), msg->data.size());
      // Reading stopped at the high-water mark resumes once JS caught up.
      if (before >= kLowWater && before - msg->data.size() < kLowWater) UpdateEvents(s);
      break;
    }
    case MsgKind::Error:
      arg = MakeError(e, msg->error);
      break;
    case MsgKind::Sent:
      arg = Napi::Number::New(e, msg->sent);
      break;
    case MsgKind::End:
      break;
  }
  uint32_t kind = static_cast<uint32_t>(msg->kind);
  delete msg;
  try {
    Napi::Function(e, fn).Call({Napi::Number::New(e, kind), arg});
  } catch (const Napi::Error& err) {
    // A listener that throws surfaces as an uncaught exception, like an event listener.
    err.ThrowAsJavaScriptException();
  }
}

// ---------------------------------------------------------------------------------------
// Exports

// virStreamNew: allocates the stream object; no I/O, so synchronous.
Napi::Value NewStream(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ConnBox* conn = UnwrapConn(env, info[0]);
  if (conn->state->ptr == nullptr)
    ThrowLibvirt(env, ErrorInfo::Make(VIR_ERR_INVALID_CONN, VIR_FROM_NONE, "the connection is closed"));
  Call c(info);
  unsigned int flags = c.Flags(1);
  virStreamPtr st = virStreamNew(conn->state->ptr, flags);
  if (st == nullptr) ThrowLibvirt(env, TakeCallError());
  auto state = std::make_shared<StreamState>();
  state->ptr = st;
  state->flags = flags;
  state->conn = conn->state;
  napi_value v;
  auto owner = std::make_shared<StreamOwner>();
  owner->s = std::move(state);
  auto* box = new StreamBox{std::move(owner)};
  if (napi_create_external(env, box, FinalizeStream, nullptr, &v) != napi_ok) {
    delete box;
    throw Napi::Error::New(env, "could not create a stream handle");
  }
  napi_type_tag_object(env, v, &kStreamTag);
  return Napi::Value(env, v);
}

Napi::Value StreamFree(const Napi::CallbackInfo& info) {
  UnwrapStream(info.Env(), info[0])->owner.reset();
  return info.Env().Undefined();
}

// virDomainOpenConsole(dom, devName or null, stream, flags).
Napi::Value OpenConsole(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virDomainPtr dom = c.Domain(0);
    std::optional<std::string> dev = c.OptStr(1, "devName");
    std::shared_ptr<StreamOwner> owner = LiveStream(c.env, c.info[2]);
    unsigned int flags = c.Flags(3);
    c.Timeout(4);
    return RunVoid(c, "virDomainOpenConsole", [dom, dev, owner, flags] {
      return virDomainOpenConsole(dom, dev ? dev->c_str() : nullptr, owner->s->ptr, flags);
    });
  });
}

// Registers the event callback (once) and the JS function that receives every message;
// `read` turns reception on. Resolves once libvirt accepted the registration.
Napi::Value StreamStart(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    std::shared_ptr<StreamOwner> owner = LiveStream(c.env, c.info[0]);
    std::shared_ptr<StreamState> st = owner->s;
    if (!c.info[1].IsFunction())
      throw Napi::TypeError::New(c.env, "listener must be a function");
    c.Timeout(2);
    if (!(st->flags & VIR_STREAM_NONBLOCK))
      throw Rejection{ErrorInfo::Make(
          VIR_ERR_OPERATION_INVALID, VIR_FROM_STREAMS,
          "event-driven streams must be non-blocking: create it with StreamFlags.NONBLOCK")};
    {
      std::lock_guard<std::mutex> lock(st->mutex);
      std::lock_guard<std::mutex> channel(st->tsfnMutex);
      if (st->started || st->ended || st->done.load())
        throw Rejection{ErrorInfo::Make(VIR_ERR_OPERATION_INVALID, VIR_FROM_STREAMS,
                                        "the stream was already started or has ended")};
      st->started = true;
      napi_value name = Napi::String::New(c.env, "libvirt stream");
      auto* ctx = new std::shared_ptr<StreamState>(st);
      if (napi_create_threadsafe_function(c.env, c.info[1], nullptr, name, 0, 1, ctx,
                                          FinalizeChannel, ctx, CallJs, &st->tsfn) != napi_ok) {
        delete ctx;
        throw Napi::Error::New(c.env, "could not create the stream's delivery channel");
      }
    }
    // The registration must happen (or fail and release the channel) even if its caller
    // stopped waiting: the channel keeps Node alive.
    c.mustRun = true;
    return c.Run<int>(
        "virStreamEventAddCallback",
        [owner, st](int& r) {
          auto* holder = new std::shared_ptr<StreamState>(st);
          std::lock_guard<std::mutex> lock(st->mutex);
          r = virStreamEventAddCallback(st->ptr, 0, OnStreamEvent, holder, FreeCallbackData);
          if (r < 0) {
            delete holder;
            SetThreadError(ErrorInfo::Capture());
            ReleaseChannel(st.get());
            return false;
          }
          st->registered = true;
          st->mask = 0;
          UpdateEventsLocked(st.get());
          return true;
        },
        [](Napi::Env env, int&) { return env.Undefined(); });
  });
}

// Turns reception on or off (the consumer's pause/resume). Synchronous: bookkeeping only.
Napi::Value StreamSetReading(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StreamBox* box = UnwrapStream(env, info[0]);
  if (!box->owner) return env.Undefined();
  StreamState* s = box->owner->s.get();
  bool reading = info[1].ToBoolean().Value();
  std::lock_guard<std::mutex> lock(s->mutex);
  s->reading = true;
  s->paused = !reading;
  UpdateEventsLocked(s);
  return env.Undefined();
}

// Queues bytes for the event-loop thread; a Sent message reports each completed chunk.
// Returns false when the stream can no longer send (ended, finished, not started).
Napi::Value StreamSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StreamBox* box = UnwrapStream(env, info[0]);
  if (!info[1].IsTypedArray())
    throw Napi::TypeError::New(env, "data must be a Buffer or Uint8Array");
  Napi::TypedArray bytes = info[1].As<Napi::TypedArray>();
  if (!box->owner) return Napi::Boolean::New(env, false);
  StreamState* s = box->owner->s.get();
  std::lock_guard<std::mutex> lock(s->mutex);
  if (!s->registered || s->ended) return Napi::Boolean::New(env, false);
  const char* p = static_cast<const char*>(bytes.ArrayBuffer().Data()) + bytes.ByteOffset();
  s->out.emplace_back(p, p + bytes.ByteLength());
  UpdateEventsLocked(s);
  return Napi::Boolean::New(env, true);
}

// virStreamFinish / virStreamAbort after removing the event callback.
template <bool Finish>
Napi::Value StreamClose(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    // Also after conn.close(): the stream holds its own connection reference.
    std::shared_ptr<StreamOwner> owner = LiveStream(c.env, c.info[0], false);
    c.Timeout(1);
    c.mustRun = true;
    return RunVoid(c, Finish ? "virStreamFinish" : "virStreamAbort", [owner] {
      StreamState* st = owner->s.get();
      bool wasEnded;
      {
        std::lock_guard<std::mutex> lock(st->mutex);
        wasEnded = st->ended;
        StopLocked(st);
      }
      ReleaseChannel(st);
      if (st->done.exchange(true)) return 0;
      if (Finish) return virStreamFinish(st->ptr);
      // Aborting a stream whose end or error receive() already reported only releases it;
      // libvirt would repeat that error here.
      if (virStreamAbort(st->ptr) < 0 && !wasEnded) return -1;
      virResetLastError();
      return 0;
    });
  });
}

}  // namespace

void ExportStream(Napi::Env env, Napi::Object e) {
  Kinds k(env, e);
  k.connect.Add("newStream", NewStream);
  k.domain.Add("openConsole", OpenConsole);
  k.stream.Add("start", StreamStart);
  k.stream.Add("setReading", StreamSetReading);
  k.stream.Add("send", StreamSend);
  k.stream.Add("finish", StreamClose<true>);
  k.stream.Add("abort", StreamClose<false>);
  k.stream.Add("free", StreamFree);
}

}  // namespace lv
