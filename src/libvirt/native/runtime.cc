#include "runtime.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <linux/futex.h>
#include <fcntl.h>
#include <cstdio>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace lv {

int64_t NowMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

// ---------------------------------------------------------------------------------------
// Errors

static thread_local std::optional<ErrorInfo> threadError;

void SetThreadError(ErrorInfo info) { threadError = std::move(info); }

ErrorInfo ErrorInfo::Make(int code, int domain, std::string message) {
  ErrorInfo e;
  e.code = code;
  e.domain = domain;
  e.message = std::move(message);
  return e;
}

ErrorInfo ErrorInfo::Capture() {
  ErrorInfo e;
  virErrorPtr err = virGetLastError();
  if (err == nullptr || err->code == VIR_ERR_OK) {
    e.code = VIR_ERR_INTERNAL_ERROR;
    e.message = "libvirt call failed without reporting an error";
    return e;
  }
  e.code = err->code;
  e.domain = err->domain;
  e.level = err->level;
  e.message = err->message != nullptr ? err->message : "";
  if (err->str1 != nullptr) e.str1 = err->str1;
  if (err->str2 != nullptr) e.str2 = err->str2;
  if (err->str3 != nullptr) e.str3 = err->str3;
  e.int1 = err->int1;
  e.int2 = err->int2;
  virResetLastError();
  return e;
}

ErrorInfo TakeCallError() {
  if (threadError) {
    ErrorInfo e = std::move(*threadError);
    threadError.reset();
    virResetLastError();
    return e;
  }
  return ErrorInfo::Capture();
}

Napi::Value MakeError(Napi::Env env, const ErrorInfo& info) {
  Napi::EscapableHandleScope scope(env);
  Napi::Object details = Napi::Object::New(env);
  details.Set("code", info.code);
  details.Set("domain", info.domain);
  details.Set("level", info.level);
  if (info.str1) details.Set("str1", *info.str1);
  if (info.str2) details.Set("str2", *info.str2);
  if (info.str3) details.Set("str3", *info.str3);
  details.Set("int1", info.int1);
  details.Set("int2", info.int2);
  EnvState* state = EnvState::Of(env);
  Napi::Value err;
  if (!state->errorCtor.IsEmpty()) {
    err = state->errorCtor.New({Napi::String::New(env, info.message), details});
  } else {
    Napi::Error e = Napi::Error::New(env, info.message);
    e.Value().Set("code", info.code);
    e.Value().Set("domain", info.domain);
    e.Value().Set("level", info.level);
    err = e.Value();
  }
  return scope.Escape(err);
}

void ThrowLibvirt(Napi::Env env, const ErrorInfo& info) {
  throw Napi::Error(env, MakeError(env, info));
}

Napi::Value Rejected(Napi::Env env, Napi::Value reason) {
  Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
  d.Reject(reason);
  return d.Promise();
}

Napi::Value BigU64(Napi::Env env, uint64_t v) { return Napi::BigInt::New(env, v); }

// ---------------------------------------------------------------------------------------
// Handles: externals tagged with their kind, so a domain handle passed where a network is
// expected is a TypeError instead of memory corruption.

static const napi_type_tag kConnTag = {0x6c69627669727401ULL, 0x636f6e6e65637421ULL};
static const napi_type_tag kDomainTag = {0x6c69627669727402ULL, 0x646f6d61696e2121ULL};
static const napi_type_tag kNetworkTag = {0x6c69627669727403ULL, 0x6e6574776f726b21ULL};
static const napi_type_tag kPoolTag = {0x6c69627669727404ULL, 0x706f6f6c21212121ULL};
static const napi_type_tag kVolTag = {0x6c69627669727405ULL, 0x766f6c2121212121ULL};

std::atomic<int64_t> handleReferences{0};
std::atomic<int64_t> openConnections{0};

template <class B>
static Napi::Value MakeExternal(Napi::Env env, B* box, const napi_type_tag* tag,
                                void (*finalize)(napi_env, void*, void*)) {
  napi_value v;
  napi_status s = napi_create_external(env, box, finalize, nullptr, &v);
  if (s != napi_ok) {
    finalize(env, box, nullptr);
    throw Napi::Error::New(env, "could not create a libvirt handle");
  }
  napi_type_tag_object(env, v, tag);
  return Napi::Value(env, v);
}

template <class B>
static B* Unwrap(Napi::Env env, Napi::Value v, const napi_type_tag* tag, const char* what) {
  bool ok = false;
  if (v.Type() == napi_external) napi_check_object_type_tag(env, v, tag, &ok);
  if (!ok) throw Napi::TypeError::New(env, std::string(what) + " must be a " + what +
                                               " handle returned by the libvirt binding");
  void* data = nullptr;
  napi_get_value_external(env, v, &data);
  return static_cast<B*>(data);
}

template <class T>
static void Unintern(napi_env env, Box<T>* box) {
  if (!box->conn || box->key.empty()) return;
  auto& table = box->conn->interned;
  auto it = table.find(box->key);
  if (it != table.end() && it->second.box == box) {
    napi_delete_reference(env, it->second.ref);
    table.erase(it);
  }
}

template <class T>
static void FinalizeBox(napi_env env, void* data, void*) {
  auto* box = static_cast<Box<T>*>(data);
  Unintern(env, box);
  FreeHandle(box);
  delete box;
}

template <class T>
static void Release(napi_env env, Box<T>* box) {
  if (box->ptr == nullptr) return;
  if (box->holders > 1) {
    box->holders--;
    return;
  }
  Unintern(env, box);
  FreeHandle(box);
}

void ReleaseHandle(napi_env env, Box<virDomainPtr>* box) { Release(env, box); }
void ReleaseHandle(napi_env env, Box<virNetworkPtr>* box) { Release(env, box); }
void ReleaseHandle(napi_env env, Box<virStoragePoolPtr>* box) { Release(env, box); }
void ReleaseHandle(napi_env env, Box<virStorageVolPtr>* box) { Release(env, box); }

// A lookup that finds an object JS already holds a handle for returns that handle and drops
// the new libvirt reference. Besides sparing memory, this keeps the number of finalizers
// (weak references V8 must process in every scavenge) proportional to the objects in use,
// not to the calls made: 250,000 lookups/s of one domain otherwise meant scavenge pauses of
// 50-150 ms. The key includes what a libvirt handle snapshots at lookup (the domain ID and
// name), so a restarted or renamed object gets a fresh handle.
template <class T>
static Napi::Value Intern(Napi::Env env, T p, const std::shared_ptr<ConnState>& conn,
                          std::string key, const napi_type_tag* tag) {
  auto& table = conn->interned;
  auto it = table.find(key);
  if (it != table.end()) {
    napi_value existing = nullptr;
    napi_get_reference_value(env, it->second.ref, &existing);
    auto* box = static_cast<Box<T>*>(it->second.box);
    if (existing != nullptr && box->ptr != nullptr) {
      box->holders++;
      if (conn->ptr != nullptr)
        DropRef(p);
      else
        PostFree(p);
      return Napi::Value(env, existing);
    }
    // Collected, its finalizer not run yet: that finalizer will not find this entry.
    napi_delete_reference(env, it->second.ref);
    table.erase(it);
  }
  auto* box = new Box<T>{p, conn, key, 1, Hold(p)};
  Napi::Value v = MakeExternal(env, box, tag, FinalizeBox<T>);
  napi_ref ref = nullptr;
  if (napi_create_reference(env, v, 0, &ref) == napi_ok)
    table.emplace(std::move(key), InternEntry{ref, box});
  else
    box->key.clear();
  return v;
}

static void AppendUUID(std::string& k, const unsigned char* uuid) {
  k.append(reinterpret_cast<const char*>(uuid), VIR_UUID_BUFLEN);
}

static std::string DomainKey(virDomainPtr p) {
  std::string k(1, 'd');
  unsigned char uuid[VIR_UUID_BUFLEN] = {0};
  virDomainGetUUID(p, uuid);
  AppendUUID(k, uuid);
  unsigned int id = virDomainGetID(p);
  k.append(reinterpret_cast<const char*>(&id), sizeof id);
  const char* name = virDomainGetName(p);
  if (name != nullptr) k.append(name);
  return k;
}

static std::string NetworkKey(virNetworkPtr p) {
  std::string k(1, 'n');
  unsigned char uuid[VIR_UUID_BUFLEN] = {0};
  virNetworkGetUUID(p, uuid);
  AppendUUID(k, uuid);
  const char* name = virNetworkGetName(p);
  if (name != nullptr) k.append(name);
  return k;
}

static std::string PoolKey(virStoragePoolPtr p) {
  std::string k(1, 'p');
  unsigned char uuid[VIR_UUID_BUFLEN] = {0};
  virStoragePoolGetUUID(p, uuid);
  AppendUUID(k, uuid);
  const char* name = virStoragePoolGetName(p);
  if (name != nullptr) k.append(name);
  return k;
}

static std::string VolKey(virStorageVolPtr p) {
  std::string k(1, 'v');
  const char* key = virStorageVolGetKey(p);
  if (key != nullptr) k.append(key);
  k.push_back('\0');
  const char* name = virStorageVolGetName(p);
  if (name != nullptr) k.append(name);
  return k;
}

static void FinalizeConn(napi_env env, void* data, void*) {
  auto* box = static_cast<ConnBox*>(data);
  if (box->state->ptr != nullptr) {
    // Unreachable, so its listeners are too: stop counting them as keeping Node alive.
    EnvState::Of(Napi::Env(env))->AddRegistrations(-static_cast<long>(box->state->Registrations()));
    PostConnClose(box->state->ptr);
    box->state->ptr = nullptr;
  }
  delete box;
}

// Lookups of domains and networks by name, UUID or ID, and a domain's info, state, XML and
// whether it is active or persistent: the daemon answers them from its object lists and the
// domain object (holding an object's lock only for as long as another thread does, never
// across a guest's monitor, a job or disk I/O; QEMU's getInfo reads the balloon size libvirt
// keeps from QEMU's events and the CPU time from /proc, and its getXMLDesc formats the
// definitions it holds), so they do not occupy a request slot for long and need not count
// against the limit (test/e2e/libvirt/admission.test.ts asks them of a domain whose QEMU is
// stopped while slow calls fill the gate). Gated, getXMLDesc with 16 in flight ran at about
// 15 % fewer calls per second (issue 17); the agent asks isActive and isPersistent of every
// domain it observes, and gated they waited behind its slow calls (memory statistics go
// through QEMU's monitor).
// The gate is for the calls that can: anything done to or asked of a domain (its job lock,
// QEMU's monitor), storage (pool locks held across refreshes and builds), lifecycle changes.
// Leaving lookups out lets an agent's many small reads overlap the way libvirt-python's threads
// do (bench/README.md, issue 17).
bool PassesGate(const char* name) {
  static const char* const kQuick[] = {
      "virDomainLookupByUUID",  "virDomainLookupByUUIDString", "virDomainLookupByName",
      "virDomainLookupByID",    "virNetworkLookupByUUID",      "virNetworkLookupByUUIDString",
      "virNetworkLookupByName", "virDomainGetInfo",            "virDomainGetState",
      "virDomainGetXMLDesc",    "virDomainIsActive",           "virDomainIsPersistent",
  };
  for (const char* q : kQuick)
    if (std::strcmp(q, name) == 0) return true;
  return false;
}

bool ServedByDaemon(virConnectPtr conn) {
  // virConnectGetURI formats the URI the connection holds; no RPC. Only a bare "test" scheme
  // is served inside this process ("test+unix://..." goes to a daemon like the rest).
  Owned<char*> uri(virConnectGetURI(conn));
  if (!uri) {
    virResetLastError();
    return true;
  }
  return std::strncmp(uri.get(), "test:", 5) != 0;
}

std::shared_ptr<ConnGate> RemoteGate() {
  unsigned limit = 4;
  if (const char* env = std::getenv("LIBVIRT_NATIVE_REMOTE_CALLS")) {
    int n = std::atoi(env);
    if (n <= 0) return nullptr;
    limit = static_cast<unsigned>(std::min(n, 1 << 20));
  }
  return std::make_shared<ConnGate>(limit);
}

Napi::Value WrapConn(Napi::Env env, std::shared_ptr<ConnState> state) {
  return MakeExternal(env, new ConnBox{std::move(state)}, &kConnTag, FinalizeConn);
}
Napi::Value WrapDomain(Napi::Env env, virDomainPtr p, const std::shared_ptr<ConnState>& c) {
  return Intern(env, p, c, DomainKey(p), &kDomainTag);
}
Napi::Value WrapNetwork(Napi::Env env, virNetworkPtr p, const std::shared_ptr<ConnState>& c) {
  return Intern(env, p, c, NetworkKey(p), &kNetworkTag);
}
Napi::Value WrapPool(Napi::Env env, virStoragePoolPtr p, const std::shared_ptr<ConnState>& c) {
  return Intern(env, p, c, PoolKey(p), &kPoolTag);
}
Napi::Value WrapVol(Napi::Env env, virStorageVolPtr p, const std::shared_ptr<ConnState>& c) {
  return Intern(env, p, c, VolKey(p), &kVolTag);
}

// Stand-ins the facade puts in place of a handle it freed: every call on them rejects as a
// freed handle, exactly as libvirt would for a freed object.
Napi::Value FreedHandles(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("domain", MakeExternal(env, new DomainBox{}, &kDomainTag, FinalizeBox<virDomainPtr>));
  o.Set("network", MakeExternal(env, new NetworkBox{}, &kNetworkTag, FinalizeBox<virNetworkPtr>));
  o.Set("storagePool", MakeExternal(env, new PoolBox{}, &kPoolTag, FinalizeBox<virStoragePoolPtr>));
  o.Set("storageVol", MakeExternal(env, new VolBox{}, &kVolTag, FinalizeBox<virStorageVolPtr>));
  return o;
}

ConnBox* UnwrapConn(Napi::Env env, Napi::Value v) {
  return Unwrap<ConnBox>(env, v, &kConnTag, "connection");
}
DomainBox* UnwrapDomain(Napi::Env env, Napi::Value v) {
  return Unwrap<DomainBox>(env, v, &kDomainTag, "domain");
}
NetworkBox* UnwrapNetwork(Napi::Env env, Napi::Value v) {
  return Unwrap<NetworkBox>(env, v, &kNetworkTag, "network");
}
PoolBox* UnwrapPool(Napi::Env env, Napi::Value v) {
  return Unwrap<PoolBox>(env, v, &kPoolTag, "storage pool");
}
VolBox* UnwrapVol(Napi::Env env, Napi::Value v) {
  return Unwrap<VolBox>(env, v, &kVolTag, "storage volume");
}

void PostConnClose(virConnectPtr p) {
  struct CloseTask final : Task {
    explicit CloseTask(virConnectPtr c) : conn(c) {}
    void Run() override {
      UnregisterCloseCallback(conn);
      virConnectClose(conn);
      openConnections.fetch_sub(1, std::memory_order_relaxed);
      delete this;
    }
    virConnectPtr conn;
  };
  WorkerPool::Get().Post(new CloseTask(p));
}

// ---------------------------------------------------------------------------------------
// Worker pool

static constexpr unsigned kMaxThreads = 64;
static constexpr int64_t kStallMs = 250;

static unsigned DefaultThreads() {
  const char* env = std::getenv("LIBVIRT_NATIVE_THREADS");
  if (env != nullptr) {
    int n = std::atoi(env);
    if (n >= 1 && n <= static_cast<int>(kMaxThreads)) return static_cast<unsigned>(n);
  }
  // More than libvirtd's default max_client_requests (5 per connection), so the daemon
  // always finds the next request of a busy connection already on its socket; slow calls
  // (a QEMU start or destroy takes 0.1-1 s) on different domains then overlap, as they do
  // from a thread per call.
  return 8;
}

WorkerPool& WorkerPool::Get() {
  // Never destroyed: worker threads may still be inside libvirt when the process exits, and
  // destroying the mutex or condition variable under them would be undefined behaviour.
  static WorkerPool* pool = [] {
    auto* p = new WorkerPool();
    p->EnsureThreads(DefaultThreads());
    std::thread([p] {
      pthread_setname_np(pthread_self(), "libvirt-watch");
      p->Supervise();
    }).detach();
    return p;
  }();
  return *pool;
}

bool WorkerPool::StalledLocked() {
  return idle_.empty() && !queue_.empty() && threads_ < kMaxThreads &&
         NowMs() - lastProgressMs_.load(std::memory_order_relaxed) > kStallMs;
}

// Watches a pool with work queued and no idle thread: when nothing has finished (or been
// handed to a free thread) for kStallMs, the busy threads are presumed stuck (a dead daemon)
// and one more is added, so calls on healthy connections keep flowing. Parked (no wake-ups) while the pool keeps up.
void WorkerPool::Supervise() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (queue_.empty() || !idle_.empty()) {
      supervisorParked_ = true;
      supervisorCv_.wait(lock);
      supervisorParked_ = false;
      continue;
    }
    supervisorCv_.wait_for(lock, std::chrono::milliseconds(kStallMs / 2));
    if (StalledLocked()) SpawnLocked();
  }
}

void WorkerPool::SpawnLocked() {
  threads_++;
  std::thread t([this] { Loop(); });
  // Named, so `top -H` and /proc/<pid>/task/*/comm tell the pool apart from Node's threads.
  // Named here rather than by the thread itself: on a busy host a new thread may not have run
  // yet when someone looks (a test that counted the names right after the first call saw 4 of
  // 8 under a full CI run).
  pthread_setname_np(t.native_handle(), "libvirt-worker");
  t.detach();
}

void WorkerPool::EnsureThreads(unsigned n) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (n > kMaxThreads) n = kMaxThreads;
  while (threads_ < n) SpawnLocked();
}

unsigned WorkerPool::Threads() {
  std::lock_guard<std::mutex> lock(mutex_);
  return threads_;
}

bool WorkerPool::AdmitLocked(Task* task) {
  if (ConnGate* g = task->gate.get()) {
    if (g->inside >= g->limit) {
      g->waiting.push_back(task);
      return false;
    }
    g->inside++;
  }
  queue_.push_back(task);
  queued_.store(queue_.size(), std::memory_order_relaxed);
  return true;
}

// Finds a thread for one newly queued task: the thread that went idle last (its stack and
// caches are the warmest, and it may still be spinning, which sees the claim without a system
// call). Returns the thread to wake once the lock is dropped, if it sleeps.
WorkerPool::Worker* WorkerPool::ClaimLocked(bool* watch) {
  if (!idle_.empty()) {
    // A thread about to take work is progress: tasks queued behind it in the same batch must
    // not look like a stalled pool just because the pool was idle for a while before.
    lastProgressMs_.store(NowMs(), std::memory_order_relaxed);
    Worker* w = idle_.back();
    idle_.pop_back();
    // Paired with Park(): either the thread sees the claim before it sleeps, or this sees
    // that it sleeps (both sequentially consistent), so no wake-up is lost.
    w->claimed.store(1, std::memory_order_seq_cst);
    return w->sleeping.load(std::memory_order_seq_cst) ? w : nullptr;
  }
  if (StalledLocked()) SpawnLocked();
  *watch = *watch || supervisorParked_;
  return nullptr;
}

static void FutexWait(std::atomic<uint32_t>* word, uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr,
          nullptr, 0);
}

static void FutexWake(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr,
          0);
}

void WorkerPool::Post(Task* task) {
  Worker* wake = nullptr;
  bool watch = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!AdmitLocked(task)) return;
    wake = ClaimLocked(&watch);
  }
  if (wake != nullptr) FutexWake(&wake->claimed);
  if (watch) supervisorCv_.notify_one();
}

void WorkerPool::PostBatch(const std::vector<Task*>& tasks) {
  if (tasks.empty()) return;
  std::vector<Worker*> wake;
  bool watch = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (Task* t : tasks) {
      if (!AdmitLocked(t)) continue;
      // One thread per queued task that a free thread can take, and no more: waking every
      // idle thread for a batch of two would only send all but two back to sleep.
      if (idle_.empty()) continue;
      if (Worker* w = ClaimLocked(&watch)) wake.push_back(w);
    }
    if (idle_.empty() && !queue_.empty()) ClaimLocked(&watch);
  }
  for (Worker* w : wake) FutexWake(&w->claimed);
  if (watch) supervisorCv_.notify_one();
}

void WorkerPool::GrowIfStalled() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (StalledLocked()) SpawnLocked();
}

// Workers run at the JS thread's priority unless LIBVIRT_NATIVE_WORKER_NICE asks for less
// (0-19). They used to run at nice +5 so CPU-bound calls on the in-process test driver would
// not compete with the event loop; but on a busy host a niced worker woken by a reply waits
// behind every ordinary process before it can hand the result back, and most calls are RPCs
// that sleep on the daemon: on qemu:///system with the machine loaded, the niced pool was the
// slower side against libvirt-python, whose calling threads run at nice 0.
static int WorkerNice() {
  const char* env = std::getenv("LIBVIRT_NATIVE_WORKER_NICE");
  if (env == nullptr) return 0;
  int n = std::atoi(env);
  return n < 0 ? 0 : (n > 19 ? 19 : n);
}

// How long a thread that ran out of work may stay awake for the next task before it sleeps
// (LIBVIRT_NATIVE_SPIN_US; 0 turns spinning off). It is for a caller that awaits each call
// before it makes the next: that call arrives one JS turn after the previous one completed,
// and a thread still awake takes it without the futex wake-up and the switch back in, which
// on a paravirtualised host cost more than the spin (measured in bench/README.md, issue 17).
// The spin adapts (SpinBudget, runtime.h), so a host whose cores are busy, where the next call
// comes late, soon stops paying for it. 200 µs rather than 100: a lone lookup's round trip
// through libvirtd takes about 100 µs, and longer whenever libvirtd's threads wait for a core;
// at 100 the JS thread's spin (twice this) ended in vain often enough to halve the rate of one
// round in several. At 200 the slowest of 15 rounds of 4,000 sequential lookups ran at 6,000-
// 10,300/s against 5,200-8,800/s (16 processes each, alternating), the median about 3 % higher,
// at the same CPU per call (2-vCPU AMD host, bench/README.md, issue 17).
static int64_t SpinMicros() {
  const char* env = std::getenv("LIBVIRT_NATIVE_SPIN_US");
  if (env == nullptr) return 200;
  int n = std::atoi(env);
  return n < 0 ? 0 : (n > 10000 ? 10000 : n);
}

static int64_t NowUs() {
  using namespace std::chrono;
  return duration_cast<microseconds>(steady_clock::now().time_since_epoch()).count();
}

// Whether the host has a core to spare for a spin: no task waiting for one, by the kernel's
// count of runnable tasks (the fourth field of /proc/loadavg, "runnable/total", read at most
// every 20 ms). A spin on a host whose cores are all wanted only takes one from libvirtd or
// the JS thread, which then answer later (measured: at a load average of 4-9 on the 2-core
// host, spinning lowered sequential calls per second).
//
// `lone`: the spinner waits on the only call this process has going (the JS thread for its
// one pending call, a worker when no other worker is busy). The count then includes the
// reader and often the thread it just handed the call or its result to, which is about to
// sleep: requiring no more tasks than cores read as "busy" at random instants and, cached for
// 20 ms, kept the spin off for the next hundreds of calls (sequential lookups ran at half the
// rate), so one task over the cores is allowed there. With many calls going, the busy workers
// are that extra task and a spin would only take a core from them (issue 17, bench/README.md).
static bool CoresToSpare(bool lone) {
  static std::atomic<int64_t> checkedAt{0};
  static std::atomic<long> runnable{0};
  static const long cpus = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
  static const int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
  int64_t now = NowMs();
  if (fd >= 0 && now - checkedAt.load(std::memory_order_relaxed) >= 20) {
    checkedAt.store(now, std::memory_order_relaxed);
    char buf[128];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    long count = 0;
    if (n > 0) {
      buf[n] = '\0';
      if (std::sscanf(buf, "%*s %*s %*s %ld/", &count) == 1)
        runnable.store(count, std::memory_order_relaxed);
    }
  }
  return runnable.load(std::memory_order_relaxed) <= cpus + (lone ? 1 : 0);
}

static inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Spins until `arrived()` or `us` microseconds have passed; true when it arrived. A spin that
// was preempted but still arrived counts as arrived: on a paravirtualised host the vCPU loses
// its core often enough that counting those as misses switched the spin off for runs whose
// calls were all arriving within it (bench/README.md, issue 17).
template <class F>
static bool SpinUntil(int64_t us, F arrived) {
  const int64_t until = NowUs() + us;
  for (unsigned i = 0;; i++) {
    if (arrived()) return true;
    CpuRelax();
    if ((i & 31) == 31 && NowUs() >= until) return false;
  }
}

static SpinBudget poolSpins;

void WorkerPool::Park(Worker& self, bool lone) {
  static const int64_t spinUs = SpinMicros();
  bool expected = false;
  // At most one thread spins at a time: on a small host several would take the cores the JS
  // thread and libvirtd need.
  if (spinUs > 0 && keepOn_.load(std::memory_order_relaxed) < 0 && poolSpins.MaySpin() &&
      CoresToSpare(lone) &&
      spinning_.compare_exchange_strong(expected, true, std::memory_order_acquire)) {
    poolSpins.Record(SpinUntil(
        spinUs, [&self] { return self.claimed.load(std::memory_order_acquire) != 0; }));
    spinning_.store(false, std::memory_order_release);
    if (self.claimed.load(std::memory_order_acquire) != 0) return;
  }
  self.sleeping.store(true, std::memory_order_seq_cst);
  while (self.claimed.load(std::memory_order_seq_cst) == 0) FutexWait(&self.claimed, 0);
  self.sleeping.store(false, std::memory_order_relaxed);
}

thread_local bool onPoolThread = false;

void WorkerPool::KeepOn(int cpu) {
  keepOn_.store(cpu, std::memory_order_relaxed);
  placement_.fetch_add(1, std::memory_order_release);
}

// Puts the calling thread on `cpu`, or back on the CPUs it started with (cpu < 0). A CPU the
// thread may not use (a cpuset changed since) leaves it where it is.
static void Place(const cpu_set_t& started, int cpu) {
  if (cpu < 0) {
    sched_setaffinity(0, sizeof started, &started);
    return;
  }
  if (cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &started)) return;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  sched_setaffinity(0, sizeof one, &one);
}

void WorkerPool::Loop() {
  static const int nice = WorkerNice();
  onPoolThread = true;
  // Linux applies PRIO_PROCESS with a thread ID to that thread alone.
  if (nice > 0) setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), nice);
  Worker self;
  cpu_set_t started;
  CPU_ZERO(&started);
  sched_getaffinity(0, sizeof started, &started);
  uint32_t placed = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (queue_.empty()) {
      self.claimed.store(0, std::memory_order_relaxed);
      idle_.push_back(&self);
      // No other thread inside a call: this one waits for the next call of a lone caller.
      const bool lone = idle_.size() == threads_;
      lock.unlock();
      Park(self, lone);
      lock.lock();
      // Claimed for a task another thread may have taken meanwhile: look again.
      continue;
    }
    Task* task = queue_.front();
    queue_.pop_front();
    queued_.store(queue_.size(), std::memory_order_relaxed);
    for (;;) {
      // The task may be gone once it ran (a job is deleted by the JS thread after settling).
      std::shared_ptr<ConnGate> gate = std::move(task->gate);
      lock.unlock();
      if (const uint32_t p = placement_.load(std::memory_order_acquire); p != placed) {
        placed = p;
        Place(started, keepOn_.load(std::memory_order_relaxed));
      }
      task->Run();
      lastProgressMs_.store(NowMs(), std::memory_order_relaxed);
      lock.lock();
      if (!gate) break;
      if (gate->waiting.empty()) {
        gate->inside--;
        break;
      }
      // The connection's next call takes over the slot on this thread, which is awake and
      // just talked to the same socket: no hand-off through the queue.
      task = gate->waiting.front();
      gate->waiting.pop_front();
    }
  }
}

// ---------------------------------------------------------------------------------------
// Jobs

void JobBase::Run() {
  // A job whose caller already gave up (timeout) before it started is skipped entirely.
  const bool run = mustRun || !abandoned.load(std::memory_order_acquire);
  const bool started = run && batchable;
  if (started) env->Started();
  if (run) Execute();
  pins.Release();
  std::shared_ptr<EnvState> state = env;
  state->Complete(this, started);
}

// ---------------------------------------------------------------------------------------
// Per-environment state

EnvState* EnvState::Of(Napi::Env env) {
  return env.GetInstanceData<std::shared_ptr<EnvState>>()->get();
}

void EnvState::Install(Napi::Env env) {
  auto holder = new std::shared_ptr<EnvState>(std::make_shared<EnvState>());
  EnvState* s = holder->get();
  s->env = env;
  env.SetInstanceData(holder);
  napi_value name = Napi::String::New(env, "libvirt");
  if (napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, s,
                                      CallJs, &s->tsfn) != napi_ok)
    throw Napi::Error::New(env, "could not create the libvirt completion channel");
  napi_unref_threadsafe_function(env, s->tsfn);
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  s->timer_ = new uv_timer_t;
  uv_timer_init(loop, s->timer_);
  s->timer_->data = s;
  // The timer only matters while calls are pending, and pending calls already keep the
  // loop alive through the thread-safe function.
  uv_unref(reinterpret_cast<uv_handle_t*>(s->timer_));
  s->check_ = new uv_check_t;
  uv_check_init(loop, s->check_);
  s->check_->data = s;
  uv_unref(reinterpret_cast<uv_handle_t*>(s->check_));
  s->prepare_ = new uv_prepare_t;
  uv_prepare_init(loop, s->prepare_);
  s->prepare_->data = s;
  uv_unref(reinterpret_cast<uv_handle_t*>(s->prepare_));
  napi_add_env_cleanup_hook(env, Cleanup, s);
}

void EnvState::Cleanup(void* arg) {
  auto* s = static_cast<EnvState*>(arg);
  std::vector<JobBase*> jobs;
  std::vector<EventMsg> events;
  {
    std::lock_guard<std::mutex> lock(s->mutex_);
    s->alive_ = false;
    jobs.swap(s->done_);
    events.swap(s->events_);
  }
  for (JobBase* j : jobs) delete j;
  s->timeouts_.clear();
  napi_release_threadsafe_function(s->tsfn, napi_tsfn_abort);
  for (JobBase* j : s->backlog_) delete j;
  s->backlog_.clear();
  uv_timer_stop(s->timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(s->timer_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  uv_check_stop(s->check_);
  uv_close(reinterpret_cast<uv_handle_t*>(s->check_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_check_t*>(h); });
  // Never handed to the pool: nothing else references them.
  for (Task* t : s->outbox_) delete t;
  s->outbox_.clear();
  uv_prepare_stop(s->prepare_);
  uv_close(reinterpret_cast<uv_handle_t*>(s->prepare_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_prepare_t*>(h); });
  s->errorCtor.Reset();
  s->dispatcher.Reset();
}

void EnvState::Wake() {
  napi_call_threadsafe_function(tsfn, nullptr, napi_tsfn_nonblocking);
}

// How many completions may wait for each other before the JS thread is woken for them
// (LIBVIRT_NATIVE_BATCH; 0 or 1: every completion signals, as before).
static size_t BatchSize() {
  const char* env = std::getenv("LIBVIRT_NATIVE_BATCH");
  if (env == nullptr) return 4;
  int n = std::atoi(env);
  return n < 1 ? 1 : static_cast<size_t>(std::min(n, 1024));
}

// A completion normally wakes the JS thread unless a wake-up is already on its way. With more
// quick calls to a daemon than the pool has threads (a backlog queued), that woke it for about
// every completion (1.2-1.5 results per wake-up): the JS thread settled a result or two, slept
// and was woken again, and on the 2-vCPU host of bench/README.md a wake-up (a worker's eventfd
// write, the loop's epoll and read, two switches) costs more than settling a result. So a
// batchable completion (a quick call to a daemon, PassesGate) does not signal while the pool has
// tasks queued (its follow-up calls could not start sooner anyway), another batchable call of
// this environment is still running and fewer than BatchSize() completions wait. The running
// calls bound the wait: the last of them to finish finds no other running and signals; and no
// slow call (a domain start, a destroy) can hold a result back, since only batchable ones count.
// Lookup + getInfo with 1,000 in flight on qemu:///system, 7 alternated pairs of fresh processes
// at load average 11-16 (issue 17): client CPU per pair 120-196 µs before (median 143), 97-144
// with this (median 118; the JS thread 39 -> 24 µs, 4.4-4.8 results per wake-up),
// libvirt-python 80-117 in the same hour.
void EnvState::Complete(JobBase* job, bool started) {
  static const size_t batch = BatchSize();
  bool signal = false;
  bool held = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // Under the lock, so of two batchable calls ending at once the second sees the first gone.
    const size_t othersRunning =
        started ? batchableRunning_.fetch_sub(1, std::memory_order_relaxed) - 1 : 0;
    if (alive_) {
      done_.push_back(job);
      held = othersRunning > 0 && done_.size() < batch && WorkerPool::Get().Queued() > 0;
      if (!held) {
        signal = !signaled_;
        signaled_ = true;
      }
      results.fetch_add(1, std::memory_order_relaxed);
      if (signal) resultWakeups.fetch_add(1, std::memory_order_relaxed);
      job = nullptr;
    }
  }
  // A held completion is no reason for the JS thread's spin to stop: no signal follows it.
  if (!held) arrivals_.fetch_add(1, std::memory_order_release);
  if (job != nullptr) delete job;
  if (signal) Wake();
}

bool EnvState::PostEvent(EventMsg msg) {
  bool signal = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!alive_) return false;
    events_.push_back(std::move(msg));
    signal = !signaled_;
    signaled_ = true;
  }
  arrivals_.fetch_add(1, std::memory_order_release);
  if (signal) Wake();
  return true;
}

void EnvState::UpdateRef() {
  bool want = pending > 0 || registrations > 0;
  if (want == refed_) return;
  refed_ = want;
  if (want)
    napi_ref_threadsafe_function(env, tsfn);
  else
    napi_unref_threadsafe_function(env, tsfn);
}

void EnvState::AddRegistrations(long delta) {
  registrations = static_cast<size_t>(static_cast<long>(registrations) + delta);
  UpdateRef();
}

Napi::Value EnvState::Submit(Napi::Env env, JobBase* job) {
  napi_value promise;
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok) {
    delete job;
    throw Napi::Error::New(env, "could not create a promise");
  }
  job->env = shared_from_this();
  pending++;
  if (job->remote) remotePending++;
  UpdateRef();
  if (job->timeoutMs > 0) {
    job->timed = true;
    job->timeout = timeouts_.emplace(NowMs() + job->timeoutMs, job);
    ArmTimer();
  }
  outbox_.push_back(job);
  if (outbox_.size() == 1) uv_prepare_start(prepare_, OnPrepare);
  return Napi::Value(env, promise);
}

void EnvState::ArmTimer() {
  if (timeouts_.empty()) {
    if (armedAt_ != INT64_MAX) uv_timer_stop(timer_);
    armedAt_ = INT64_MAX;
    return;
  }
  int64_t first = timeouts_.begin()->first;
  if (first == armedAt_) return;
  armedAt_ = first;
  int64_t delay = first - NowMs();
  uv_timer_start(timer_, OnTimer, delay > 0 ? static_cast<uint64_t>(delay) : 0, 0);
}

void EnvState::OnTimer(uv_timer_t* t) {
  // Settling needs a JS scope; routing through the thread-safe function provides one. A
  // drain already on its way expires timeouts too.
  auto* s = static_cast<EnvState*>(t->data);
  s->armedAt_ = INT64_MAX;
  bool signal = false;
  {
    std::lock_guard<std::mutex> lock(s->mutex_);
    signal = !s->signaled_;
    s->signaled_ = true;
  }
  if (signal) s->Wake();
}

// Runs once per loop iteration after a drain. Node dispatches a thread-safe function in a
// loop for as long as calls keep arriving, which under load would drain completions without
// ever returning to the event loop; so workers signal only once per iteration, and this
// check re-signals for whatever arrived (or was left in the backlog) during it.
void EnvState::FlushOutbox() {
  WorkerPool::Get().PostBatch(outbox_);
  outbox_.clear();
  Colocate();
}

static bool ColocateEnabled() {
  const char* env = std::getenv("LIBVIRT_NATIVE_COLOCATE");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  return sysconf(_SC_NPROCESSORS_ONLN) > 1;
}

// With calls to a daemon in flight, the JS thread and the workers hand calls and results to
// each other thousands of times a second. When the kernel runs them on different CPUs every
// hand-off crosses between them, and on the 2-vCPU host of bench/README.md the same calls then
// cost up to twice the CPU: 15,000-19,000 lookups/s with the JS thread on one CPU and the
// workers on the other, 38,000-46,000/s with all of them on one, where left to the kernel they
// went from one to the other from second to second. So while two or more calls to a daemon are
// pending, the pool's threads are kept on the CPU this thread runs on, following it at most
// every 10 ms, and let go when one or none is: a lone caller's calls are better served by a
// worker spinning on another CPU (sequential getXMLDesc ran at half the rate with all on one
// CPU), and neither this thread nor the workers spin while they share one. From two on, not
// only from many: with 2-6 in flight the threads apart ran at 0.4-1.0x libvirt-python's rate
// for as many threads, mostly near 0.6x, together at 0.7-1.4x (bench/README.md, issue 17).
// Calls to in-process drivers (test:///) never count: their work is CPU work the workers do
// beside the JS thread. LIBVIRT_NATIVE_COLOCATE=0 turns this off.
void EnvState::Colocate() {
  static const bool enabled = ColocateEnabled();
  static constexpr size_t kTogetherAt = 2;
  static constexpr int64_t kEveryMs = 10;
  if (!enabled) return;
  WorkerPool& pool = WorkerPool::Get();
  const int kept = pool.KeptOn();
  const bool together = remotePending >= kTogetherAt;
  if (together == (kept >= 0) && (!together || kept == sched_getcpu())) return;
  // At most one move per kEveryMs: a caller whose calls in flight hover around the threshold
  // must not cost every thread a system call per call.
  const int64_t now = NowMs();
  if (now - colocatedAt_ < kEveryMs) return;
  const int cpu = together ? sched_getcpu() : -1;
  if (together && cpu < 0) return;
  pool.KeepOn(cpu);
  colocatedAt_ = now;
}

// The JS-thread side of the spin (the worker side is WorkerPool::Park): when the loop is about
// to block with calls pending, it first watches for a completion for up to twice
// LIBVIRT_NATIVE_SPIN_US. A call that completes meanwhile has already signalled the
// thread-safe function, so the loop's poll then returns at once instead of sleeping and being
// woken: a caller that awaits each call saves a thread wake-up per call, and with many calls
// in flight the thread settles the next few completions in one wake-up instead of one each
// (on a paravirtualised host a wake-up costs more than the spin). Only while the host has a
// core to spare, and adaptive like the workers' spin: after 4 spins in a row that ended with
// nothing, it spins only every 4th time.
void EnvState::SpinForCompletion() {
  static const int64_t spinUs = 2 * SpinMicros();
  // Kept on this CPU, the workers would wait for the spin to end.
  if (spinUs == 0 || pending == 0 || WorkerPool::Get().KeptOn() >= 0 || !spins_.MaySpin() ||
      !CoresToSpare(pending == 1))
    return;
  const uint32_t seen = arrivals_.load(std::memory_order_acquire);
  spins_.Record(SpinUntil(
      spinUs, [this, seen] { return arrivals_.load(std::memory_order_acquire) != seen; }));
}

void EnvState::OnPrepare(uv_prepare_t* p) {
  auto* s = static_cast<EnvState*>(p->data);
  s->FlushOutbox();
  s->SpinForCompletion();
  uv_prepare_stop(p);
}

void EnvState::OnCheck(uv_check_t* c) {
  auto* s = static_cast<EnvState*>(c->data);
  s->FlushOutbox();
  bool more;
  {
    std::lock_guard<std::mutex> lock(s->mutex_);
    // Held completions too (see Complete): this thread is awake, and settling them now costs
    // less than sleeping and being woken for them.
    more = !s->done_.empty() || !s->events_.empty() || !s->backlog_.empty();
    s->signaled_ = more;
  }
  if (more)
    s->Wake();
  else
    uv_check_stop(c);
}

void EnvState::ExpireTimeouts(Napi::Env env) {
  if (timeouts_.empty()) return;
  int64_t now = NowMs();
  bool expired = false;
  while (!timeouts_.empty() && timeouts_.begin()->first <= now) {
    JobBase* job = timeouts_.begin()->second;
    timeouts_.erase(timeouts_.begin());
    job->timed = false;
    job->settled = true;
    job->abandoned.store(true, std::memory_order_release);
    pending--;
    if (job->remote) remotePending--;
    expired = true;
    Napi::HandleScope scope(env);
    ErrorInfo info = ErrorInfo::Make(
        VIR_ERR_OPERATION_TIMEOUT, VIR_FROM_NONE,
        std::string(job->name) + " did not complete within " + std::to_string(job->timeoutMs) +
            " ms (the call may still finish in libvirt)");
    napi_reject_deferred(env, job->deferred, MakeError(env, info));
  }
  if (expired) WorkerPool::Get().GrowIfStalled();
  armedAt_ = INT64_MAX;
  ArmTimer();
}

void EnvState::Settle(Napi::Env env, JobBase* job) {
  if (job->settled) {
    // Timed out earlier; its result may hold libvirt references, drop them off this thread.
    struct DeleteTask final : Task {
      explicit DeleteTask(JobBase* j) : job(j) {}
      void Run() override {
        delete job;
        delete this;
      }
      JobBase* job;
    };
    WorkerPool::Get().Post(new DeleteTask(job));
    return;
  }
  job->settled = true;
  if (job->timed) timeouts_.erase(job->timeout);
  pending--;
  if (job->remote) remotePending--;
  Napi::HandleScope scope(env);
  if (job->failed) {
    napi_reject_deferred(env, job->deferred, MakeError(env, job->error));
  } else {
    try {
      napi_resolve_deferred(env, job->deferred, job->Result(env));
    } catch (const Napi::Error& e) {
      napi_reject_deferred(env, job->deferred, e.Value());
    }
  }
  delete job;
}

// Settles completions for at most one time slice per loop iteration, so timers and I/O keep
// their turn however many calls are in flight.
static constexpr auto kDrainSlice = std::chrono::microseconds(1000);

void EnvState::Drain(Napi::Env env) {
  std::vector<JobBase*> jobs;
  std::vector<EventMsg> events;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs.swap(done_);
    events.swap(events_);
  }
  backlog_.insert(backlog_.end(), jobs.begin(), jobs.end());
  auto deadline = std::chrono::steady_clock::now() + kDrainSlice;
  for (size_t n = 0; !backlog_.empty(); n++) {
    if ((n & 63) == 63 && std::chrono::steady_clock::now() > deadline) break;
    JobBase* job = backlog_.front();
    backlog_.pop_front();
    Settle(env, job);
  }
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(check_))) uv_check_start(check_, OnCheck);
  ExpireTimeouts(env);
  Napi::Value uncaught;
  for (EventMsg& msg : events) DispatchEvent(env, msg, &uncaught);
  UpdateRef();
  if (!uncaught.IsEmpty()) Napi::Error(env, uncaught).ThrowAsJavaScriptException();
}

void EnvState::CallJs(napi_env env, napi_value, void* ctx, void*) {
  if (env == nullptr) return;
  auto* s = static_cast<EnvState*>(ctx);
  // A C++ exception must not unwind into Node's C callback.
  try {
    s->Drain(Napi::Env(env));
  } catch (const Napi::Error& e) {
    e.ThrowAsJavaScriptException();
  } catch (const std::exception& e) {
    Napi::Error::New(Napi::Env(env), std::string("libvirt binding: ") + e.what())
        .ThrowAsJavaScriptException();
  }
}

void EnvState::DispatchEvent(Napi::Env env, EventMsg& msg, Napi::Value* uncaught) {
  Napi::HandleScope scope(env);
  Napi::Value handle = env.Undefined();
  switch (msg.kind) {
    case EventKind::DomainLifecycle:
    case EventKind::DomainReboot:
    case EventKind::DomainDeviceRemoved:
      handle = WrapDomain(env, static_cast<virDomainPtr>(msg.object), msg.conn);
      break;
    case EventKind::NetworkLifecycle:
      handle = WrapNetwork(env, static_cast<virNetworkPtr>(msg.object), msg.conn);
      break;
    case EventKind::StoragePoolLifecycle:
    case EventKind::StoragePoolRefresh:
      handle = WrapPool(env, static_cast<virStoragePoolPtr>(msg.object), msg.conn);
      break;
    case EventKind::ConnectionClosed:
      break;
  }
  if (dispatcher.IsEmpty()) return;
  try {
    dispatcher.Call({Napi::Number::New(env, static_cast<uint32_t>(msg.kind)),
                     Napi::Number::New(env, msg.key), handle, Napi::Number::New(env, msg.event),
                     Napi::Number::New(env, msg.detail),
                     msg.kind == EventKind::DomainDeviceRemoved
                         ? Napi::String::New(env, msg.text)
                         : env.Undefined()});
  } catch (const Napi::Error& e) {
    if (uncaught->IsEmpty()) *uncaught = e.Value();
  }
}

// ---------------------------------------------------------------------------------------
// Call

static ErrorInfo ClosedError() {
  return ErrorInfo::Make(VIR_ERR_INVALID_CONN, VIR_FROM_NONE, "the connection is closed");
}

void Call::TakeConn(const std::shared_ptr<ConnState>& state, const char*) {
  if (state->ptr == nullptr) throw Rejection{ClosedError()};
  if (!conn) conn = state;
}

virConnectPtr Call::Conn(size_t i) {
  ConnBox* box = UnwrapConn(env, info[i]);
  TakeConn(box->state, "connection");
  virConnectRef(box->state->ptr);
  Owned<virConnectPtr> pin(box->state->ptr);
  if (!pins_.conn) pins_.conn = std::move(pin);
  return box->state->ptr;
}

template <class B>
static void CheckLive(B* box, int code, const char* what) {
  if (box->ptr == nullptr)
    throw Rejection{ErrorInfo::Make(code, VIR_FROM_NONE,
                                    std::string("the ") + what + " handle was freed")};
}

virDomainPtr Call::Domain(size_t i) {
  DomainBox* box = UnwrapDomain(env, info[i]);
  CheckLive(box, VIR_ERR_INVALID_DOMAIN, "domain");
  TakeConn(box->conn, "domain");
  pins_.domain = box->held;
  return box->ptr;
}

virNetworkPtr Call::Network(size_t i) {
  NetworkBox* box = UnwrapNetwork(env, info[i]);
  CheckLive(box, VIR_ERR_INVALID_NETWORK, "network");
  TakeConn(box->conn, "network");
  pins_.network = box->held;
  return box->ptr;
}

virStoragePoolPtr Call::Pool(size_t i) {
  PoolBox* box = UnwrapPool(env, info[i]);
  CheckLive(box, VIR_ERR_INVALID_STORAGE_POOL, "storage pool");
  TakeConn(box->conn, "storage pool");
  pins_.pool = box->held;
  return box->ptr;
}

virStorageVolPtr Call::Vol(size_t i) {
  VolBox* box = UnwrapVol(env, info[i]);
  CheckLive(box, VIR_ERR_INVALID_STORAGE_VOL, "storage volume");
  TakeConn(box->conn, "storage volume");
  pins_.vol = box->held;
  return box->ptr;
}

std::string Call::Str(size_t i, const char* what) const {
  Napi::Value v = info[i];
  if (!v.IsString()) throw Napi::TypeError::New(env, std::string(what) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

std::optional<std::string> Call::OptStr(size_t i, const char* what) const {
  Napi::Value v = info[i];
  if (v.IsUndefined() || v.IsNull()) return std::nullopt;
  return Str(i, what);
}

static double NumberArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d)
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be an integer");
  return d;
}

unsigned int Call::Flags(size_t i) const {
  if (info[i].IsUndefined()) return 0;
  double d = NumberArg(info, i, "flags");
  if (d < 0 || d > 4294967295.0)
    throw Napi::TypeError::New(env, "flags must be an unsigned 32-bit integer");
  return static_cast<unsigned int>(d);
}

unsigned int Call::UInt(size_t i, const char* what) const {
  double d = NumberArg(info, i, what);
  if (d < 0 || d > 4294967295.0)
    throw Napi::TypeError::New(env, std::string(what) + " must be an unsigned 32-bit integer");
  return static_cast<unsigned int>(d);
}

int Call::Int(size_t i, const char* what) const {
  double d = NumberArg(info, i, what);
  if (d < -2147483648.0 || d > 2147483647.0)
    throw Napi::TypeError::New(env, std::string(what) + " must be a 32-bit integer");
  return static_cast<int>(d);
}

uint64_t Call::U64(size_t i, const char* what) const {
  Napi::Value v = info[i];
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless)
      throw Napi::TypeError::New(env, std::string(what) + " must fit in an unsigned 64-bit integer");
    return r;
  }
  if (!v.IsNumber())
    throw Napi::TypeError::New(env, std::string(what) + " must be a bigint or a number");
  double d = NumberArg(info, i, what);
  if (d < 0 || d > 9007199254740991.0)
    throw Napi::TypeError::New(env, std::string(what) +
                                        " must be a non-negative safe integer (use a bigint beyond 2^53)");
  return static_cast<uint64_t>(d);
}

void Call::Timeout(size_t i) {
  if (info[i].IsUndefined() || info[i].IsNull()) return;
  double d = NumberArg(info, i, "timeoutMs");
  if (d < 0 || d > 2147483647.0)
    throw Napi::TypeError::New(env, "timeoutMs must be a non-negative integer of milliseconds");
  timeoutMs_ = static_cast<uint32_t>(d);
}

}  // namespace lv
