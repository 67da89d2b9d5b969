// The machinery every binding function shares: a dedicated worker pool (libvirt calls can
// block for as long as a remote daemon does, so they must never occupy libuv's pool), jobs
// that carry one libvirt call and its result, batched delivery of results to the JS thread
// through one thread-safe function per Node environment, per-call timeouts, libvirt error
// capture on the calling thread, and the typed handles that wrap libvirt objects.
#pragma once

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <napi.h>
#include <uv.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <unordered_map>
#include <string>
#include <utility>
#include <vector>

namespace lv {

// ---------------------------------------------------------------------------------------
// Errors

struct ErrorInfo {
  int code = 0;
  int domain = 0;
  int level = VIR_ERR_ERROR;
  std::string message;
  std::optional<std::string> str1, str2, str3;
  int int1 = 0;
  int int2 = 0;

  // Reads libvirt's thread-local last error; must run on the thread that made the call.
  static ErrorInfo Capture();
  static ErrorInfo Make(int code, int domain, std::string message);
};

// Thrown while a binding function prepares a call, to reject its promise with a
// LibvirtError (closed connection, freed handle) rather than a TypeError.
struct Rejection {
  ErrorInfo info;
};

// Lets a worker-side step that is not a libvirt call (opening a file for an upload) fail
// with its own error; Execute() prefers it over libvirt's last error.
void SetThreadError(ErrorInfo info);

Napi::Value MakeError(Napi::Env env, const ErrorInfo& info);

// ---------------------------------------------------------------------------------------
// Owned libvirt references. Each holds one reference and drops it when reset.

inline void DropRef(virConnectPtr p) { virConnectClose(p); }
inline void DropRef(virDomainPtr p) { virDomainFree(p); }
inline void DropRef(virNetworkPtr p) { virNetworkFree(p); }
inline void DropRef(virStoragePoolPtr p) { virStoragePoolFree(p); }
inline void DropRef(virStorageVolPtr p) { virStorageVolFree(p); }
inline void DropRef(virDomainSnapshotPtr p) { virDomainSnapshotFree(p); }
inline void DropRef(char* p) { free(p); }

template <class T>
class Owned {
 public:
  Owned() = default;
  explicit Owned(T p) : p_(p) {}
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  Owned(Owned&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
  Owned& operator=(Owned&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = o.p_;
      o.p_ = nullptr;
    }
    return *this;
  }
  ~Owned() { reset(); }
  void reset() {
    if (p_ != nullptr) DropRef(p_);
    p_ = nullptr;
  }
  T release() {
    T p = p_;
    p_ = nullptr;
    return p;
  }
  T get() const { return p_; }
  T* out() {
    reset();
    return &p_;
  }
  explicit operator bool() const { return p_ != nullptr; }

 private:
  T p_ = nullptr;
};

// The one libvirt reference a handle owns, shared by the handle and the calls in flight on it
// (Pins), so that a call pins its object with an atomic increment instead of a virDomainRef /
// virDomainFree pair: libvirt formats the object's UUID for the debug line of both, logging
// on or not, about 1 us per call (bench/README.md, issue 17). Whoever lets go of it last drops
// the reference: FreeHandle on the JS thread when no call is in flight, else the pool thread
// that ends the last call. Defined below, after PostFree.
template <class T>
struct Held;

// The references a job holds on its target objects while it is in flight, so an explicit
// free() or a finalizer during the call cannot free what the worker is using.
struct Pins {
  Owned<virConnectPtr> conn;
  std::shared_ptr<Held<virDomainPtr>> domain;
  std::shared_ptr<Held<virNetworkPtr>> network;
  std::shared_ptr<Held<virStoragePoolPtr>> pool;
  std::shared_ptr<Held<virStorageVolPtr>> vol;
  // Before domain: a snapshot holds its domain.
  std::shared_ptr<Held<virDomainSnapshotPtr>> snapshot;
  void Release() {
    snapshot.reset();
    domain.reset();
    network.reset();
    pool.reset();
    vol.reset();
    conn.reset();
  }
};

// ---------------------------------------------------------------------------------------
// Handles

// What a connection's handle and every child handle share: the live pointer (null once
// close() was called, which makes every later call on it or its children reject) and the
// key under which its close callback reaches JS. JS-thread only.
// One live JS handle per libvirt object (see Intern in runtime.cc).
struct InternEntry {
  napi_ref ref;  // weak
  void* box;
};

class Task;

// Admission of one remote connection's calls into libvirtd. The daemon reads at most
// max_client_requests (default 5) requests of a client at once and stops reading that client's
// socket while they run, so it no longer sees the client's keepalive answers either: calls
// slower than keepalive_interval x keepalive_count (5 s x 5 by default; a QEMU start on a
// saturated host) got the connection dropped ("Client hit max requests limit", then "connection
// closed due to keepalive timeout"). The binding therefore lets at most `limit` calls of a
// connection into the daemon (default 4, one below the daemon's default, so a slot stays free
// for keepalive) and queues the rest here, in call order; lookups pass (PassesGate). Guarded by
// WorkerPool's mutex.
struct ConnGate {
  explicit ConnGate(unsigned n) : limit(n) {}
  const unsigned limit;
  unsigned inside = 0;
  std::deque<Task*> waiting;
};

// Whether a call (by libvirt function name) goes to the daemon without waiting at its
// connection's gate; see the list in runtime.cc.
bool PassesGate(const char* name);

// Whether a connection's calls go to a daemon: all but in-process drivers (test:///).
bool ServedByDaemon(virConnectPtr conn);

// The gate for a freshly opened connection to a daemon; LIBVIRT_NATIVE_REMOTE_CALLS overrides
// the limit (0 = no gate).
std::shared_ptr<ConnGate> RemoteGate();

struct ConnState {
  virConnectPtr ptr = nullptr;
  // Set on the JS thread when the connection opens: whether a daemon serves the calls
  // (ServedByDaemon), and its gate (null for in-process connections, or with no limit).
  bool remote = false;
  std::shared_ptr<ConnGate> gate;
  // Live handles of this connection by object identity. JS-thread only; every entry belongs
  // to a live handle, whose finalizer removes it, so the table is empty when this dies.
  std::unordered_map<std::string, InternEntry> interned;
  // libvirt callback IDs registered through this connection, per event family, so the
  // count that keeps Node alive is only decremented for registrations that exist.
  std::set<int> domainCallbacks, networkCallbacks, poolCallbacks;
  size_t Registrations() const {
    return domainCallbacks.size() + networkCallbacks.size() + poolCallbacks.size();
  }
};

struct ConnBox {
  std::shared_ptr<ConnState> state;
};

template <class T>
struct Box {
  T ptr = nullptr;
  std::shared_ptr<ConnState> conn;
  // Identity in conn->interned; empty for handles that are not interned.
  std::string key;
  // How many times this handle was handed to JS; free() gives one back, and the libvirt
  // reference is dropped when all were (or when the handle is garbage collected).
  uint32_t holders = 1;
  // The libvirt reference (null once freed), shared with the calls in flight.
  std::shared_ptr<Held<T>> held;
};

using DomainBox = Box<virDomainPtr>;
using NetworkBox = Box<virNetworkPtr>;
using PoolBox = Box<virStoragePoolPtr>;
using VolBox = Box<virStorageVolPtr>;

// Take ownership of one libvirt reference and return a JS handle for it.
Napi::Value WrapConn(Napi::Env env, std::shared_ptr<ConnState> state);
Napi::Value WrapDomain(Napi::Env env, virDomainPtr p, const std::shared_ptr<ConnState>& conn);
Napi::Value WrapNetwork(Napi::Env env, virNetworkPtr p, const std::shared_ptr<ConnState>& conn);
Napi::Value WrapPool(Napi::Env env, virStoragePoolPtr p, const std::shared_ptr<ConnState>& conn);
Napi::Value WrapVol(Napi::Env env, virStorageVolPtr p, const std::shared_ptr<ConnState>& conn);

Napi::Value FreedHandles(Napi::Env env);

ConnBox* UnwrapConn(Napi::Env env, Napi::Value v);
DomainBox* UnwrapDomain(Napi::Env env, Napi::Value v);
NetworkBox* UnwrapNetwork(Napi::Env env, Napi::Value v);
PoolBox* UnwrapPool(Napi::Env env, Napi::Value v);
VolBox* UnwrapVol(Napi::Env env, Napi::Value v);

// Drops the handle's reference (explicit free() or finalizer). A child's last reference can
// only dispose its connection when the connection was closed (our own connection reference
// is gone); only then can the unref block on an RPC, so only then it runs off the JS thread.
template <class T>
void FreeHandle(Box<T>* box);

// free() from JS: gives back one holder; the last one drops the libvirt reference.
void ReleaseHandle(napi_env env, Box<virDomainPtr>* box);
void ReleaseHandle(napi_env env, Box<virNetworkPtr>* box);
void ReleaseHandle(napi_env env, Box<virStoragePoolPtr>* box);
void ReleaseHandle(napi_env env, Box<virStorageVolPtr>* box);

// For synchronous accessors: throws a LibvirtError when the handle was freed.
[[noreturn]] void ThrowLibvirt(Napi::Env env, const ErrorInfo& info);

// Closing a connection off the JS thread: virConnectClose may be the last unref, and for a
// remote connection that is an RPC.
void PostConnClose(virConnectPtr p);

// ---------------------------------------------------------------------------------------
// Worker pool

class Task {
 public:
  virtual ~Task() = default;
  virtual void Run() = 0;
  // The connection admission this task passes through (null: runs as soon as a thread is free).
  std::shared_ptr<ConnGate> gate;
};

class WorkerPool {
 public:
  static WorkerPool& Get();
  void Post(Task* task);
  // One lock for many tasks: how the JS thread hands over the calls of a loop iteration.
  void PostBatch(const std::vector<Task*>& tasks);
  void EnsureThreads(unsigned n);
  // Keeps the threads on one CPU (the JS thread's) from their next task on, or lets them run
  // anywhere again (cpu < 0); see EnvState::Colocate.
  void KeepOn(int cpu);
  int KeptOn() const { return keepOn_.load(std::memory_order_relaxed); }
  // Adds a thread when every thread has been busy without finishing anything for a while:
  // those threads are most likely stuck in calls to a dead daemon.
  void GrowIfStalled();
  unsigned Threads();
  // Tasks queued for a free thread (not those waiting at a connection's gate); read without
  // the lock, so a moment's view.
  size_t Queued() const { return queued_.load(std::memory_order_relaxed); }

 private:
  // One pool thread's parking spot; lives on that thread's stack (threads never exit). The
  // thread waits on `claimed` itself (a futex word), not on a condition variable: waking from
  // one re-takes the pool's mutex in its contended state, which costs a futex call more per
  // wake-up, and a claim that lands while the thread is still awake (spinning, or not yet
  // asleep) costs no system call at all.
  struct Worker {
    std::atomic<uint32_t> claimed{0};
    std::atomic<bool> sleeping{false};
  };
  void Loop();
  // Waits until a claim sets `self.claimed`: a bounded spin first (see SpinBudget), then sleep.
  void Park(Worker& self, bool lone);
  void Supervise();
  void SpawnLocked();
  bool StalledLocked();
  // Queues a task, or parks it at its connection's gate; true when it was queued.
  bool AdmitLocked(Task* task);
  // Hands one queued task to an idle thread; returns the thread to wake once the lock is
  // dropped (it sleeps), or null.
  Worker* ClaimLocked(bool* watch);
  std::mutex mutex_;
  std::condition_variable supervisorCv_;
  std::deque<Task*> queue_;
  // queue_.size(), for Queued().
  std::atomic<size_t> queued_{0};
  // Threads without work, the one that went idle last at the back (spinning or asleep).
  std::vector<Worker*> idle_;
  // Whether a thread spins right now (at most one does).
  std::atomic<bool> spinning_{false};
  unsigned threads_ = 0;
  bool supervisorParked_ = false;
  std::atomic<int64_t> lastProgressMs_{0};
  // The CPU the threads are kept on (-1: none), and a count of changes each thread compares
  // with the last one it applied.
  std::atomic<int> keepOn_{-1};
  std::atomic<uint32_t> placement_{0};
};

template <class T>
void PostFree(T p) {
  struct FreeTask final : Task {
    explicit FreeTask(T x) : ref(x) {}
    void Run() override { delete this; }
    Owned<T> ref;
  };
  WorkerPool::Get().Post(new FreeTask(p));
}

// libvirt references owned by JS handles (domain, network, pool, volume, snapshot) or, once
// such a handle was freed, by the calls still in flight on it; for leak checks: it returns to
// its baseline once freed handles are collected and their calls have ended.
extern std::atomic<int64_t> handleReferences;

// True on the pool's threads, where dropping a libvirt reference may block (the last
// reference of a closed connection's object disposes the connection: an RPC).
extern thread_local bool onPoolThread;

template <class T>
struct Held {
  explicit Held(T p) : ptr(p) {}
  Held(const Held&) = delete;
  Held& operator=(const Held&) = delete;
  ~Held() {
    if (ptr != nullptr) Drop(onPoolThread);
  }
  // Drops the reference on this thread (`here`: it may block) or on the pool; once.
  void Drop(bool here) {
    T p = ptr;
    ptr = nullptr;
    handleReferences.fetch_sub(1, std::memory_order_relaxed);
    if (here)
      DropRef(p);
    else
      PostFree(p);
  }
  // Set once; cleared when dropped.
  T ptr;
};

template <class T>
std::shared_ptr<Held<T>> Hold(T p) {
  handleReferences.fetch_add(1, std::memory_order_relaxed);
  return std::make_shared<Held<T>>(p);
}

// Connections opened through the binding and not yet closed in libvirt.
extern std::atomic<int64_t> openConnections;

template <class T>
void FreeHandle(Box<T>* box) {
  if (box->ptr == nullptr) return;
  box->ptr = nullptr;
  std::shared_ptr<Held<T>> held = std::move(box->held);
  // Copies are only made here on the JS thread (Call), so a count of one stays one: no call
  // is in flight and the reference is dropped now. Otherwise the last call's pool thread drops
  // it (or, should that call end before this function returns, `held` goes last here and Held
  // posts it to the pool).
  // On the JS thread only while the connection is open: the last reference of a closed
  // connection's object disposes the connection, an RPC.
  if (held && held.use_count() == 1) held->Drop(box->conn && box->conn->ptr != nullptr);
}

template <class T>
T LiveHandle(Napi::Env env, Box<T>* box, int code, const char* what) {
  if (box->ptr == nullptr)
    ThrowLibvirt(env, ErrorInfo::Make(code, VIR_FROM_NONE,
                                      std::string("the ") + what + " handle was freed"));
  return box->ptr;
}

// ---------------------------------------------------------------------------------------
// Jobs and the per-environment state

class EnvState;

class JobBase : public Task {
 public:
  void Run() final;
  virtual void Execute() = 0;
  virtual Napi::Value Result(Napi::Env env) = 0;

  std::shared_ptr<EnvState> env;
  const char* name = "";
  napi_deferred deferred = nullptr;
  Pins pins;
  bool failed = false;
  ErrorInfo error;
  std::atomic<bool> abandoned{false};
  // Runs even when its caller gave up first (a close must not leak the connection).
  bool mustRun = false;
  // A quick call to a daemon (PassesGate), whose completion may wait for others to reach the
  // JS thread with them (see EnvState::Complete). Set before the job is posted.
  bool batchable = false;
  // JS-thread only:
  // A call to a daemon (ConnState::remote), counted in EnvState::remotePending.
  bool remote = false;
  bool settled = false;
  bool timed = false;
  uint32_t timeoutMs = 0;
  std::multimap<int64_t, JobBase*>::iterator timeout;
};

// Fills the error from SetThreadError() or libvirt's last error.
ErrorInfo TakeCallError();

template <class R, class W, class D>
class Job final : public JobBase {
 public:
  Job(W w, D d) : work_(std::move(w)), done_(std::move(d)) {}
  void Execute() override {
    if (!work_(result_)) {
      failed = true;
      error = TakeCallError();
    }
  }
  Napi::Value Result(Napi::Env env) override { return done_(env, result_); }

 private:
  W work_;
  D done_;
  R result_{};
};

enum class EventKind : uint32_t {
  DomainLifecycle = 0,
  NetworkLifecycle = 1,
  StoragePoolLifecycle = 2,
  ConnectionClosed = 3,
  DomainReboot = 4,
  StoragePoolRefresh = 5,
  DomainDeviceRemoved = 6,
};

struct EventMsg {
  EventKind kind;
  uint32_t key;
  void* object;  // one owned reference to a virDomainPtr / virNetworkPtr / virStoragePoolPtr
  std::shared_ptr<ConnState> conn;
  int event;
  int detail;
  // The device alias of a DomainDeviceRemoved event; empty for the others.
  std::string text;
};

// Spinning pays only while what it waits for arrives within the spin and the host has a core
// to spare. After 4 spins in a row that ended empty (a host too busy, or a caller that is not
// sequential), a spinner goes straight to sleep and spins again only every 4th time, to notice
// when the pattern returns. A rarer probe (every 32nd) left a sequential caller asleep for
// whole runs after a short burst of slow replies: the JS thread's and the pool's spins each
// succeed only while the other's does, so both must come back quickly (issue 17). One budget
// for the worker pool, one per JS thread.
class SpinBudget {
 public:
  bool MaySpin() {
    unsigned period = periods_.fetch_add(1, std::memory_order_relaxed);
    return misses_.load(std::memory_order_relaxed) < kMissesBeforeBackoff ||
           period % kProbeEvery == 0;
  }
  void Record(bool good) {
    if (good)
      misses_.store(0, std::memory_order_relaxed);
    else
      misses_.fetch_add(1, std::memory_order_relaxed);
  }

 private:
  static constexpr unsigned kMissesBeforeBackoff = 4;
  static constexpr unsigned kProbeEvery = 4;
  std::atomic<unsigned> misses_{0};
  std::atomic<unsigned> periods_{0};
};

class EnvState : public std::enable_shared_from_this<EnvState> {
 public:
  static EnvState* Of(Napi::Env env);
  static void Install(Napi::Env env);

  // Worker/event threads. `Started` counts a batchable job about to run; its Complete must then
  // say so (`started`).
  void Started() { batchableRunning_.fetch_add(1, std::memory_order_relaxed); }
  void Complete(JobBase* job, bool started);
  bool PostEvent(EventMsg msg);

  // JS thread.
  Napi::Value Submit(Napi::Env env, JobBase* job);
  void Drain(Napi::Env env);
  void AddRegistrations(long delta);
  void UpdateRef();

  napi_env env = nullptr;
  napi_threadsafe_function tsfn = nullptr;
  Napi::FunctionReference errorCtor;
  Napi::FunctionReference dispatcher;
  size_t pending = 0;
  // Of those, calls to a daemon (see Colocate).
  size_t remotePending = 0;
  size_t registrations = 0;
  // Completed calls, and how many times one of them woke the JS thread (bindingStats: results
  // per wake-up, see Complete).
  std::atomic<uint64_t> results{0};
  std::atomic<uint64_t> resultWakeups{0};

 private:
  void Wake();
  void Settle(Napi::Env env, JobBase* job);
  void ExpireTimeouts(Napi::Env env);
  void ArmTimer();
  void DispatchEvent(Napi::Env env, EventMsg& msg, Napi::Value* uncaught);
  static void CallJs(napi_env env, napi_value fn, void* ctx, void* data);
  static void OnTimer(uv_timer_t* t);
  static void OnCheck(uv_check_t* c);
  static void OnPrepare(uv_prepare_t* p);
  void FlushOutbox();
  // Keeps the pool's threads on this thread's CPU while two or more calls to a daemon are in
  // flight.
  void Colocate();
  // Before the loop blocks with calls pending: waits briefly for a completion (see .cc).
  void SpinForCompletion();
  static void Cleanup(void* arg);

  bool refed_ = false;
  std::multimap<int64_t, JobBase*> timeouts_;
  uv_timer_t* timer_ = nullptr;
  int64_t armedAt_ = INT64_MAX;
  uv_check_t* check_ = nullptr;
  uv_prepare_t* prepare_ = nullptr;
  // Calls submitted during this loop iteration, handed to the pool in one batch before the
  // loop next waits (prepare) or right after a drain and its microtasks (check).
  std::vector<Task*> outbox_;
  // Completions taken from done_ but not settled yet: a drain stops after its time slice.
  std::deque<JobBase*> backlog_;

  std::mutex mutex_;
  std::vector<JobBase*> done_;
  std::vector<EventMsg> events_;
  // True from the first completion after a drain until the loop iteration that drains it
  // ends: workers signal at most once per loop iteration (see OnCheck).
  bool signaled_ = false;
  // Batchable jobs running on the pool now; decremented under mutex_.
  std::atomic<size_t> batchableRunning_{0};
  bool alive_ = true;
  // Bumped by every completion and event, read without the lock by SpinForCompletion.
  std::atomic<uint32_t> arrivals_{0};
  // How the JS thread's recent spins went.
  SpinBudget spins_;
  // When Colocate last moved the pool or let it go (ms): at most one change per 10 ms.
  int64_t colocatedAt_ = 0;
};

int64_t NowMs();

// ---------------------------------------------------------------------------------------
// Argument parsing and the shape of every asynchronous binding function

class Call {
 public:
  explicit Call(const Napi::CallbackInfo& info) : info(info), env(info.Env()) {}

  // Unwrap a handle argument, reject if its connection is closed or it was freed, and pin
  // it for the duration of the call.
  virConnectPtr Conn(size_t i);
  virDomainPtr Domain(size_t i);
  virNetworkPtr Network(size_t i);
  virStoragePoolPtr Pool(size_t i);
  virStorageVolPtr Vol(size_t i);
  virDomainSnapshotPtr Snapshot(size_t i);  // defined in snapshot.cc

  std::string Str(size_t i, const char* what) const;
  std::optional<std::string> OptStr(size_t i, const char* what) const;
  unsigned int Flags(size_t i) const;
  unsigned int UInt(size_t i, const char* what) const;
  int Int(size_t i, const char* what) const;
  uint64_t U64(size_t i, const char* what) const;
  void Timeout(size_t i);

  // The connection state of the handle unwrapped first; results that are handles share it.
  std::shared_ptr<ConnState> conn;

  // The next Run() creates a job that executes even if it times out while queued.
  bool mustRun = false;

  template <class R, class W, class D>
  Napi::Value Run(const char* name, W work, D done) {
    auto* job = new Job<R, W, D>(std::move(work), std::move(done));
    job->name = name;
    job->mustRun = mustRun;
    job->pins = std::move(pins_);
    job->timeoutMs = timeoutMs_;
    job->remote = conn && conn->remote;
    job->batchable = job->remote && PassesGate(name);
    if (conn && conn->gate && !PassesGate(name)) job->gate = conn->gate;
    return EnvState::Of(env)->Submit(env, job);
  }

  const Napi::CallbackInfo& info;
  Napi::Env env;

 private:
  void TakeConn(const std::shared_ptr<ConnState>& state, const char* what);
  Pins pins_;
  uint32_t timeoutMs_ = 0;
};

Napi::Value Rejected(Napi::Env env, Napi::Value reason);

// Runs the body of an asynchronous binding function; argument errors and closed handles
// become a rejected promise, never a synchronous throw or a crash.
template <class F>
Napi::Value Async(const Napi::CallbackInfo& info, F body) {
  Napi::Env env = info.Env();
  try {
    Call call(info);
    return body(call);
  } catch (const Napi::Error& e) {
    return Rejected(env, e.Value());
  } catch (const Rejection& r) {
    return Rejected(env, MakeError(env, r.info));
  }
}

// Common result shapes. Each `call` runs on a worker and returns libvirt's value.
template <class F>
Napi::Value RunVoid(Call& c, const char* name, F f) {
  return c.Run<int>(
      name, [f](int& r) { return (r = f()) >= 0; },
      [](Napi::Env env, int&) { return env.Undefined(); });
}

template <class F>
Napi::Value RunInt(Call& c, const char* name, F f) {
  return c.Run<int>(
      name, [f](int& r) { return (r = f()) >= 0; },
      [](Napi::Env env, int& r) { return Napi::Number::New(env, r); });
}

template <class F>
Napi::Value RunBool(Call& c, const char* name, F f) {
  return c.Run<int>(
      name, [f](int& r) { return (r = f()) >= 0; },
      [](Napi::Env env, int& r) { return Napi::Boolean::New(env, r != 0); });
}

// For libvirt functions returning a malloc'd string the caller frees.
template <class F>
Napi::Value RunString(Call& c, const char* name, F f) {
  return c.Run<Owned<char*>>(
      name,
      [f](Owned<char*>& r) {
        *r.out() = f();
        return static_cast<bool>(r);
      },
      [](Napi::Env env, Owned<char*>& r) { return Napi::String::New(env, r.get()); });
}

template <class T, class F>
Napi::Value RunHandle(Call& c, const char* name, Napi::Value (*wrap)(Napi::Env, T, const std::shared_ptr<ConnState>&), F f) {
  std::shared_ptr<ConnState> conn = c.conn;
  return c.Run<Owned<T>>(
      name,
      [f](Owned<T>& r) {
        *r.out() = f();
        return static_cast<bool>(r);
      },
      [wrap, conn](Napi::Env env, Owned<T>& r) { return wrap(env, r.release(), conn); });
}

// For the ListAll… family: an array of owned references freed by libvirt's caller.
template <class T, class F>
Napi::Value RunHandleList(Call& c, const char* name, Napi::Value (*wrap)(Napi::Env, T, const std::shared_ptr<ConnState>&), F f) {
  std::shared_ptr<ConnState> conn = c.conn;
  return c.Run<std::vector<Owned<T>>>(
      name,
      [f](std::vector<Owned<T>>& r) {
        T* list = nullptr;
        int n = f(&list);
        if (n < 0) return false;
        r.reserve(n);
        for (int i = 0; i < n; i++) r.emplace_back(list[i]);
        free(list);
        return true;
      },
      [wrap, conn](Napi::Env env, std::vector<Owned<T>>& r) {
        Napi::Array out = Napi::Array::New(env, r.size());
        for (size_t i = 0; i < r.size(); i++) out.Set(i, wrap(env, r[i].release(), conn));
        return out;
      });
}

Napi::Value BigU64(Napi::Env env, uint64_t v);

using Exporter = void (*)(Napi::Env env, Napi::Object exports);
void ExportConnect(Napi::Env env, Napi::Object exports);
void ExportDomain(Napi::Env env, Napi::Object exports);
void ExportNetwork(Napi::Env env, Napi::Object exports);
void ExportStorage(Napi::Env env, Napi::Object exports);
void ExportEvents(Napi::Env env, Napi::Object exports);
void ExportStats(Napi::Env env, Napi::Object exports);
void ExportSnapshot(Napi::Env env, Napi::Object exports);

// Registers the connection-close callback for a freshly opened connection (worker thread).
void RegisterCloseCallback(virConnectPtr conn, const std::shared_ptr<EnvState>& env,
                           const std::shared_ptr<ConnState>& state, uint32_t key);
void UnregisterCloseCallback(virConnectPtr conn);

}  // namespace lv
