// Module entry: process-wide libvirt setup (once, whatever the number of Node environments)
// and the exports table.
#include <chrono>
#include <mutex>
#include <thread>

#include "event-loop.h"
#include "runtime.h"

namespace lv {

void ExportStream(Napi::Env env, Napi::Object exports);  // stream.cc

namespace {

// Errors reach JS through LibvirtError; without a handler libvirt prints each to stderr.
void SilentErrors(void*, virErrorPtr) {}

std::string processInitError;

void InitProcess() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (virInitialize() < 0) {
      processInitError = "virInitialize failed";
      return;
    }
    virSetErrorFunc(nullptr, SilentErrors);
    // Must precede the first virConnectOpen, or remote connections get no keepalive/events.
    // The binding's own loop (event-loop.cc) serves keepalive, event callbacks and close
    // notifications for every connection in the process, on a thread that never keeps Node
    // alive.
    processInitError = StartEventLoop();
  });
}

Napi::Value SetErrorConstructor(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "constructor must be a function");
  EnvState::Of(info.Env())->errorCtor = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Value SetEventDispatcher(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "dispatcher must be a function");
  EnvState::Of(info.Env())->dispatcher = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Value SetThreadPoolSize(const Napi::CallbackInfo& info) {
  if (!info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "size must be a number");
  int n = info[0].As<Napi::Number>().Int32Value();
  if (n < 1) throw Napi::TypeError::New(info.Env(), "size must be at least 1");
  WorkerPool::Get().EnsureThreads(static_cast<unsigned>(n));
  return Napi::Number::New(info.Env(), WorkerPool::Get().Threads());
}

// Counters for tests and diagnostics: calls awaiting a result, event registrations that keep
// Node alive, worker threads and the CPU they are kept on (-1: none), and how many calls
// completed and how many times one of them woke the JS thread.
Napi::Value Stats(const Napi::CallbackInfo& info) {
  EnvState* s = EnvState::Of(info.Env());
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("pendingCalls", static_cast<double>(s->pending));
  o.Set("eventRegistrations", static_cast<double>(s->registrations));
  o.Set("workerThreads", WorkerPool::Get().Threads());
  o.Set("workersKeptOnCpu", WorkerPool::Get().KeptOn());
  o.Set("openConnections",
        static_cast<double>(openConnections.load(std::memory_order_relaxed)));
  o.Set("handleReferences",
        static_cast<double>(handleReferences.load(std::memory_order_relaxed)));
  o.Set("results", static_cast<double>(s->results.load(std::memory_order_relaxed)));
  o.Set("resultWakeups", static_cast<double>(s->resultWakeups.load(std::memory_order_relaxed)));
  return o;
}

Napi::Value GetVersion(const Napi::CallbackInfo& info) {
  unsigned long v = 0;
  if (virGetVersion(&v, nullptr, nullptr) < 0) ThrowLibvirt(info.Env(), TakeCallError());
  return Napi::Number::New(info.Env(), static_cast<double>(v));
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InitProcess();
  if (!processInitError.empty()) throw Napi::Error::New(env, "libvirt: " + processInitError);
  EnvState::Install(env);
  exports.Set("setErrorConstructor", Napi::Function::New(env, SetErrorConstructor));
  exports.Set("setEventDispatcher", Napi::Function::New(env, SetEventDispatcher));
  exports.Set("setThreadPoolSize", Napi::Function::New(env, SetThreadPoolSize));
  exports.Set("stats", Napi::Function::New(env, Stats));
  exports.Set("getVersion", Napi::Function::New(env, GetVersion));
  exports.Set("freedHandles", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return FreedHandles(info.Env());
              }));
  ExportConnect(env, exports);
  ExportDomain(env, exports);
  ExportNetwork(env, exports);
  ExportStorage(env, exports);
  ExportEvents(env, exports);
  ExportStats(env, exports);
  ExportSnapshot(env, exports);
  ExportStream(env, exports);
  return exports;
}

}  // namespace lv

static Napi::Object InitLibvirt(Napi::Env env, Napi::Object exports) {
  return lv::Init(env, exports);
}

NODE_API_MODULE(libvirt_native, InitLibvirt)
