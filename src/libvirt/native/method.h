// The shape most binding functions share, written once: read the arguments in order (handles
// unwrapped and pinned, the rest type-checked, a bad one rejects the promise), take the call's
// timeout from the argument after them, run one libvirt function on a worker with those
// arguments, and turn its result into a JS value or its failure into a LibvirtError.
//
//   x.Bind<ToVoid, virDomainSetMemoryFlags>("domainSetMemoryFlags", "virDomainSetMemoryFlags",
//                                           Dom{}, U64{"memory (KiB)"}, Flags{});
//
// reads (dom, kib, flags, timeout) and resolves with undefined. Functions whose arguments or
// results need more than that keep a hand-written body and are added with x.Add.
#pragma once

#include <tuple>
#include <type_traits>
#include <utility>

#include "runtime.h"

namespace lv {

// ---------------------------------------------------------------------------------------
// Handles: how each kind is unwrapped for a call (pinned) or for a synchronous accessor.

// Unwrapping for a call (pinned); and, for the kinds with synchronous accessors, for those:
// the box, the error code of a freed handle and the kind's name in that error.
template <class T, T (Call::*Take)(size_t), Box<T>* (*Unwrap)(Napi::Env, Napi::Value) = nullptr,
          int Invalid = 0>
struct KindOf {
  static constexpr T (Call::*take)(size_t) = Take;
  static constexpr Box<T>* (*unwrap)(Napi::Env, Napi::Value) = Unwrap;
  static constexpr int invalid = Invalid;
  static constexpr const char* what = Invalid == VIR_ERR_INVALID_DOMAIN         ? "domain"
                                      : Invalid == VIR_ERR_INVALID_NETWORK      ? "network"
                                      : Invalid == VIR_ERR_INVALID_STORAGE_POOL ? "storage pool"
                                      : Invalid == VIR_ERR_INVALID_STORAGE_VOL  ? "storage volume"
                                                                                : "";
};

template <class T>
struct HandleKind;
template <>
struct HandleKind<virConnectPtr> : KindOf<virConnectPtr, &Call::Conn> {};
template <>
struct HandleKind<virDomainSnapshotPtr> : KindOf<virDomainSnapshotPtr, &Call::Snapshot> {};
template <>
struct HandleKind<virDomainPtr>
    : KindOf<virDomainPtr, &Call::Domain, &UnwrapDomain, VIR_ERR_INVALID_DOMAIN> {};
template <>
struct HandleKind<virNetworkPtr>
    : KindOf<virNetworkPtr, &Call::Network, &UnwrapNetwork, VIR_ERR_INVALID_NETWORK> {};
template <>
struct HandleKind<virStoragePoolPtr>
    : KindOf<virStoragePoolPtr, &Call::Pool, &UnwrapPool, VIR_ERR_INVALID_STORAGE_POOL> {};
template <>
struct HandleKind<virStorageVolPtr>
    : KindOf<virStorageVolPtr, &Call::Vol, &UnwrapVol, VIR_ERR_INVALID_STORAGE_VOL> {};

// The handle a synchronous accessor acts on (argument 0); throws when it was freed.
template <class T>
T SyncHandle(const Napi::CallbackInfo& info) {
  using K = HandleKind<T>;
  return LiveHandle(info.Env(), K::unwrap(info.Env(), info[0]), K::invalid, K::what);
}

template <class F>
struct FirstArg;
template <class R, class T, class... A>
struct FirstArg<R (*)(T, A...)> {
  using type = T;
};

// The local accessors libvirt answers without I/O: getName(), getKey(), getUUIDString(),
// getUUID(); and free().
template <auto F>
Napi::Value SyncString(const Napi::CallbackInfo& info) {
  const char* s = F(SyncHandle<typename FirstArg<decltype(F)>::type>(info));
  return Napi::String::New(info.Env(), s != nullptr ? s : "");
}

template <auto F>
Napi::Value SyncUUIDString(const Napi::CallbackInfo& info) {
  char buf[VIR_UUID_STRING_BUFLEN];
  if (F(SyncHandle<typename FirstArg<decltype(F)>::type>(info), buf) < 0)
    ThrowLibvirt(info.Env(), TakeCallError());
  return Napi::String::New(info.Env(), buf);
}

template <auto F>
Napi::Value SyncUUID(const Napi::CallbackInfo& info) {
  unsigned char buf[VIR_UUID_BUFLEN];
  if (F(SyncHandle<typename FirstArg<decltype(F)>::type>(info), buf) < 0)
    ThrowLibvirt(info.Env(), TakeCallError());
  return Napi::Buffer<unsigned char>::Copy(info.Env(), buf, VIR_UUID_BUFLEN);
}

template <class T>
Napi::Value FreeHandleOf(const Napi::CallbackInfo& info) {
  ReleaseHandle(info.Env(), HandleKind<T>::unwrap(info.Env(), info[0]));
  return info.Env().Undefined();
}

// ---------------------------------------------------------------------------------------
// Argument readers: each reads argument i on the JS thread and returns what the job keeps
// (strings by value); Pass() turns that into what the libvirt function takes.

template <class T>
struct HandleArg {
  T operator()(Call& c, size_t i) const { return (c.*HandleKind<T>::take)(i); }
};
using Conn = HandleArg<virConnectPtr>;
using Dom = HandleArg<virDomainPtr>;
using Net = HandleArg<virNetworkPtr>;
using Pool = HandleArg<virStoragePoolPtr>;
using Vol = HandleArg<virStorageVolPtr>;
using Snap = HandleArg<virDomainSnapshotPtr>;

struct Flags {
  unsigned int operator()(Call& c, size_t i) const { return c.Flags(i); }
};
struct UInt {
  const char* what;
  unsigned int operator()(Call& c, size_t i) const { return c.UInt(i, what); }
};
struct Int {
  const char* what;
  int operator()(Call& c, size_t i) const { return c.Int(i, what); }
};
struct U64 {
  const char* what;
  uint64_t operator()(Call& c, size_t i) const { return c.U64(i, what); }
};
struct Str {
  const char* what;
  std::string operator()(Call& c, size_t i) const { return c.Str(i, what); }
};
// A string or null/undefined (libvirt's NULL).
struct OptStr {
  const char* what;
  std::optional<std::string> operator()(Call& c, size_t i) const { return c.OptStr(i, what); }
};
// A boolean, passed to libvirt as 1 or 0.
struct Bool {
  const char* what;
  int operator()(Call& c, size_t i) const {
    if (!c.info[i].IsBoolean())
      throw Napi::TypeError::New(c.env, std::string(what) + " must be a boolean");
    return c.info[i].As<Napi::Boolean>().Value() ? 1 : 0;
  }
};

template <class T>
T Pass(T v) {
  return v;
}
inline const char* Pass(const std::string& s) { return s.c_str(); }
inline const char* Pass(const std::optional<std::string>& s) {
  return s ? s->c_str() : nullptr;
}

// F(args..., extra...): the job's arguments, then any out-parameters.
template <auto F, class Args, class... Extra>
auto Apply(const Args& args, Extra... extra) {
  return std::apply([&](const auto&... a) { return F(Pass(a)..., extra...); }, args);
}

// Argument I of a call whose out-parameter stands at Pos among the job's arguments.
template <size_t I, size_t Pos, class Args, class Out>
decltype(auto) ArgAt(const Args& args, Out out) {
  if constexpr (I < Pos)
    return Pass(std::get<I>(args));
  else if constexpr (I == Pos)
    return out;
  else
    return Pass(std::get<I - 1>(args));
}

template <auto F, size_t Pos, class Args, class Out, size_t... I>
auto ApplyAt(const Args& args, Out out, std::index_sequence<I...>) {
  return F(ArgAt<I, Pos>(args, out)...);
}

// F(args before Pos..., out, args from Pos...).
template <auto F, size_t Pos, class Args, class Out>
auto ApplyAt(const Args& args, Out out) {
  return ApplyAt<F, Pos>(args, out, std::make_index_sequence<std::tuple_size_v<Args> + 1>());
}

// ---------------------------------------------------------------------------------------
// Result shapes: how the worker decides success and what the promise resolves with.

// What libvirt returns itself: an int >= 0 (resolved as undefined, the number or a boolean)
// or a malloc'd string (NULL on failure).
enum class Returns { Void, Int, Bool, String };
template <Returns K>
struct ToReturn {
  template <auto F, class A>
  static Napi::Value Run(Call& c, const char* name, A args) {
    auto call = [args] { return Apply<F>(args); };
    if constexpr (K == Returns::Void) return RunVoid(c, name, call);
    if constexpr (K == Returns::Int) return RunInt(c, name, call);
    if constexpr (K == Returns::Bool) return RunBool(c, name, call);
    if constexpr (K == Returns::String) return RunString(c, name, call);
  }
};
using ToVoid = ToReturn<Returns::Void>;
using ToInt = ToReturn<Returns::Int>;
using ToBool = ToReturn<Returns::Bool>;
using ToString = ToReturn<Returns::String>;

// A new reference, NULL on failure: a handle made by Wrap.
template <auto Wrap>
struct ToHandle {
  template <auto F, class A>
  static Napi::Value Run(Call& c, const char* name, A args) {
    return RunHandle(c, name, Wrap, [args] { return Apply<F>(args); });
  }
};

// The ListAll… family: F(handle, &list, rest...) returns the count; an array of handles.
template <auto Wrap>
struct ToList {
  template <auto F, class A>
  static Napi::Value Run(Call& c, const char* name, A args) {
    return RunHandleList(c, name, Wrap, [args](auto** list) { return ApplyAt<F, 1>(args, list); });
  }
};

// An out-parameter filled by F(args..., &out), which returns 0 on success; Marshal makes the
// JS value (a struct's fields, a flag as a boolean, a version as a number).
template <class T, Napi::Value (*Marshal)(Napi::Env, T&)>
struct ToOut {
  template <auto F, class A>
  static Napi::Value Run(Call& c, const char* name, A args) {
    return c.Run<T>(
        name, [args](T& r) { return Apply<F>(args, &r) == 0; }, Marshal);
  }
};

// A 64-bit quantity returned directly, 0 on failure: a BigInt. Where 0 is also a real answer
// (free memory), the call failed only when libvirt set an error with it.
template <bool ZeroMayBeReal>
struct ToBigU64 {
  template <auto F, class A>
  static Napi::Value Run(Call& c, const char* name, A args) {
    return c.Run<uint64_t>(
        name,
        [args](uint64_t& r) {
          if constexpr (ZeroMayBeReal) virResetLastError();
          r = Apply<F>(args);
          return r != 0 || (ZeroMayBeReal && virGetLastError() == nullptr);
        },
        [](Napi::Env env, uint64_t& r) { return BigU64(env, r); });
  }
};

inline Napi::Value FlagJS(Napi::Env env, int& r) { return Napi::Boolean::New(env, r != 0); }
using ToFlag = ToOut<int, FlagJS>;

// A list of libvirt structs F allocates at Pos among the arguments and returns the count of;
// each is freed with FreeItem and becomes an element made by Marshal.
template <class Item, void (*FreeItem)(Item)>
struct OwnedList {
  Item* list = nullptr;
  int n = 0;
  OwnedList() = default;
  OwnedList(const OwnedList&) = delete;
  OwnedList& operator=(const OwnedList&) = delete;
  ~OwnedList() {
    for (int i = 0; i < n; i++) FreeItem(list[i]);
    free(list);
  }
};

template <class Item, void (*FreeItem)(Item), Napi::Value (*Marshal)(Napi::Env, Item), size_t Pos>
struct ToArray {
  template <auto F, class A>
  static Napi::Value Run(Call& c, const char* name, A args) {
    using R = OwnedList<Item, FreeItem>;
    return c.Run<R>(
        name,
        [args](R& r) {
          r.n = ApplyAt<F, Pos>(args, &r.list);
          if (r.n >= 0) return true;
          r.n = 0;
          return false;
        },
        [](Napi::Env env, R& r) {
          Napi::Array out = Napi::Array::New(env, r.n);
          for (int i = 0; i < r.n; i++) out.Set(i, Marshal(env, r.list[i]));
          return out;
        });
  }
};

// Reads the arguments in order (a braced list evaluates left to right), then the timeout.
template <class Out, auto F, class... R, size_t... I>
Napi::Value Method(const Napi::CallbackInfo& info, const char* name, std::index_sequence<I...>,
                   const R&... readers) {
  return Async(info, [&](Call& c) {
    std::tuple<decltype(readers(c, I))...> args{readers(c, I)...};
    c.Timeout(sizeof...(R));
    return Out::template Run<F>(c, name, std::move(args));
  });
}

// ---------------------------------------------------------------------------------------
// What one source file adds to the addon's exports.

class Exports {
 public:
  Exports(Napi::Env env, Napi::Object target) : env_(env), target_(target) {}

  // The object `name` below this one, made on first use: one per libvirt object kind
  // (native.domain.getName, native.network.getName, …), so the JS side can treat the calls the
  // kinds have in common alike.
  Exports Of(const char* name) {
    Napi::Value v = target_.Get(name);
    if (!v.IsObject()) {
      v = Napi::Object::New(env_);
      target_.Set(name, v);
    }
    return Exports(env_, v.As<Napi::Object>());
  }

  template <class F>
  Exports& Add(const char* name, F fn) {
    target_.Set(name, Napi::Function::New(env_, fn, name));
    return *this;
  }

  // `name` calls libvirt's `call` (F) with the arguments `readers` read.
  template <class Out, auto F, class... R>
  Exports& Bind(const char* name, const char* call, R... readers) {
    return Add(name, [call, readers...](const Napi::CallbackInfo& info) {
      return Method<Out, F>(info, call, std::index_sequence_for<R...>(), readers...);
    });
  }

 private:
  Napi::Env env_;
  Napi::Object target_;
};

// The addon's tables of calls, one per object kind; each Export… function adds to them.
struct Kinds {
  Kinds(Napi::Env env, Napi::Object e)
      : connect(Exports(env, e).Of("connect")),
        domain(Exports(env, e).Of("domain")),
        snapshot(Exports(env, e).Of("domainSnapshot")),
        network(Exports(env, e).Of("network")),
        pool(Exports(env, e).Of("storagePool")),
        vol(Exports(env, e).Of("storageVol")),
        stream(Exports(env, e).Of("stream")) {}
  Exports connect, domain, snapshot, network, pool, vol, stream;
};

// getName(), getUUIDString(), getUUID() and free() of a domain, network or storage pool.
template <auto GetName, auto GetUUIDString, auto GetUUID>
void AddIdentity(Exports& x) {
  x.Add("getName", SyncString<GetName>)
      .Add("getUUIDString", SyncUUIDString<GetUUIDString>)
      .Add("getUUID", SyncUUID<GetUUID>)
      .Add("free", FreeHandleOf<typename FirstArg<decltype(GetName)>::type>);
}

}  // namespace lv
