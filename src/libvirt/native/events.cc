// Event registration and delivery. libvirt calls these callbacks on the event-loop thread
// (see addon.cc); each takes its own reference on the object and queues a message that the
// JS thread turns into a dispatcher call. The dispatcher, the listener table and the keys
// live in JS: a key is chosen before registering, so an event that arrives before the
// registration promise settles still finds its listener.
#include "method.h"

namespace lv {

namespace {

struct EventTarget {
  std::weak_ptr<EnvState> env;
  std::shared_ptr<ConnState> conn;
  uint32_t key;
};

void FreeTarget(void* opaque) { delete static_cast<EventTarget*>(opaque); }

template <class T>
void Post(void* opaque, EventKind kind, T object, int event, int detail,
          int (*ref)(T), int (*unref)(T), std::string text = {}) {
  auto* t = static_cast<EventTarget*>(opaque);
  std::shared_ptr<EnvState> env = t->env.lock();
  if (!env) return;
  if (object != nullptr) ref(object);
  if (!env->PostEvent(EventMsg{kind, t->key, object, t->conn, event, detail, std::move(text)}) &&
      object != nullptr)
    unref(object);
}

int OnDomainLifecycle(virConnectPtr, virDomainPtr dom, int event, int detail, void* opaque) {
  Post(opaque, EventKind::DomainLifecycle, dom, event, detail, virDomainRef, virDomainFree);
  return 0;
}

void OnDomainReboot(virConnectPtr, virDomainPtr dom, void* opaque) {
  Post(opaque, EventKind::DomainReboot, dom, 0, 0, virDomainRef, virDomainFree);
}

// QEMU finished unplugging a device (the guest let it go, or its bus needs no answer): its alias.
void OnDomainDeviceRemoved(virConnectPtr, virDomainPtr dom, const char* devAlias, void* opaque) {
  Post(opaque, EventKind::DomainDeviceRemoved, dom, 0, 0, virDomainRef, virDomainFree,
       devAlias != nullptr ? std::string(devAlias) : std::string());
}

void OnNetworkLifecycle(virConnectPtr, virNetworkPtr net, int event, int detail, void* opaque) {
  Post(opaque, EventKind::NetworkLifecycle, net, event, detail, virNetworkRef, virNetworkFree);
}

void OnPoolLifecycle(virConnectPtr, virStoragePoolPtr pool, int event, int detail,
                     void* opaque) {
  Post(opaque, EventKind::StoragePoolLifecycle, pool, event, detail, virStoragePoolRef,
       virStoragePoolFree);
}

void OnPoolRefresh(virConnectPtr, virStoragePoolPtr pool, void* opaque) {
  Post(opaque, EventKind::StoragePoolRefresh, pool, 0, 0, virStoragePoolRef, virStoragePoolFree);
}

void OnClose(virConnectPtr, int reason, void* opaque) {
  auto* t = static_cast<EventTarget*>(opaque);
  std::shared_ptr<EnvState> env = t->env.lock();
  if (env)
    env->PostEvent(EventMsg{EventKind::ConnectionClosed, t->key, nullptr, t->conn, reason, 0, {}});
}

enum class Family { Domain, Network, Pool };

std::set<int>& CallbackSet(ConnState& s, Family f) {
  switch (f) {
    case Family::Domain: return s.domainCallbacks;
    case Family::Network: return s.networkCallbacks;
    default: return s.poolCallbacks;
  }
}

// Resolves with libvirt's callback ID; from then on the registration keeps Node alive.
template <class Register>
Napi::Value RegisterWith(Call& c, Family family, const char* name, uint32_t key, Register reg) {
  std::shared_ptr<EnvState> env = EnvState::Of(c.env)->shared_from_this();
  std::shared_ptr<ConnState> conn = c.conn;
  return c.Run<int>(
      name,
      [reg, env, conn, key](int& id) {
        auto* target = new EventTarget{env, conn, key};
        id = reg(target);
        if (id < 0) delete target;
        return id >= 0;
      },
      [env, conn, family](Napi::Env e, int& id) {
        // A close() that raced the registration already dropped libvirt's callbacks.
        if (conn->ptr != nullptr && CallbackSet(*conn, family).insert(id).second)
          env->AddRegistrations(1);
        return Napi::Number::New(e, id);
      });
}

// The callback libvirt calls for each event ID a family supports; a TypeError for the others.
virConnectDomainEventGenericCallback DomainCallback(Napi::Env env, int eventId) {
  if (eventId == VIR_DOMAIN_EVENT_ID_LIFECYCLE)
    return VIR_DOMAIN_EVENT_CALLBACK(OnDomainLifecycle);
  if (eventId == VIR_DOMAIN_EVENT_ID_REBOOT) return VIR_DOMAIN_EVENT_CALLBACK(OnDomainReboot);
  if (eventId == VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED)
    return VIR_DOMAIN_EVENT_CALLBACK(OnDomainDeviceRemoved);
  throw Napi::TypeError::New(
      env, "eventID must be VIR_DOMAIN_EVENT_ID_LIFECYCLE, REBOOT or DEVICE_REMOVED");
}

virConnectNetworkEventGenericCallback NetworkCallback(Napi::Env env, int eventId) {
  if (eventId != VIR_NETWORK_EVENT_ID_LIFECYCLE)
    throw Napi::TypeError::New(env, "eventID must be VIR_NETWORK_EVENT_ID_LIFECYCLE");
  return VIR_NETWORK_EVENT_CALLBACK(OnNetworkLifecycle);
}

virConnectStoragePoolEventGenericCallback PoolCallback(Napi::Env env, int eventId) {
  if (eventId == VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE)
    return VIR_STORAGE_POOL_EVENT_CALLBACK(OnPoolLifecycle);
  if (eventId == VIR_STORAGE_POOL_EVENT_ID_REFRESH)
    return VIR_STORAGE_POOL_EVENT_CALLBACK(OnPoolRefresh);
  throw Napi::TypeError::New(env,
                             "eventID must be VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE or REFRESH");
}

// (conn, object or null for all, eventID, key, timeout) -> libvirt's callback ID, for every
// family: RegisterAny is virConnect…EventRegisterAny, Pick the family's callback.
template <class T, class Callback,
          int (*RegisterAny)(virConnectPtr, T, int, Callback, void*, virFreeCallback),
          Callback (*Pick)(Napi::Env, int)>
Napi::Value Register(const Napi::CallbackInfo& info, Family family, const char* name) {
  return Async(info, [family, name](Call& c) {
    virConnectPtr conn = c.Conn(0);
    T object = (c.info[1].IsNull() || c.info[1].IsUndefined()) ? nullptr
                                                               : HandleArg<T>()(c, 1);
    int eventId = c.Int(2, "eventID");
    uint32_t key = c.UInt(3, "key");
    c.Timeout(4);
    Callback cb = Pick(c.env, eventId);
    return RegisterWith(c, family, name, key, [conn, object, eventId, cb](EventTarget* t) {
      return RegisterAny(conn, object, eventId, cb, t, FreeTarget);
    });
  });
}

template <int (*F)(virConnectPtr, int)>
Napi::Value Deregister(const Napi::CallbackInfo& info, Family family, const char* name) {
  return Async(info, [family, name](Call& c) {
    virConnectPtr conn = c.Conn(0);
    int id = c.Int(1, "callbackID");
    c.Timeout(2);
    if (CallbackSet(*c.conn, family).erase(id) > 0) EnvState::Of(c.env)->AddRegistrations(-1);
    return RunVoid(c, name, [conn, id] { return F(conn, id); });
  });
}

}  // namespace

void RegisterCloseCallback(virConnectPtr conn, const std::shared_ptr<EnvState>& env,
                           const std::shared_ptr<ConnState>& state, uint32_t key) {
  auto* target = new EventTarget{env, state, key};
  if (virConnectRegisterCloseCallback(conn, OnClose, target, FreeTarget) < 0) {
    // Drivers without a close notion still open fine; there is simply nothing to report.
    delete target;
    virResetLastError();
  }
}

void UnregisterCloseCallback(virConnectPtr conn) {
  if (virConnectUnregisterCloseCallback(conn, OnClose) < 0) virResetLastError();
}

void ExportEvents(Napi::Env env, Napi::Object e) {
  Kinds k(env, e);
  k.domain.Add("eventRegisterAny", [](const Napi::CallbackInfo& i) {
    return Register<virDomainPtr, virConnectDomainEventGenericCallback,
                    virConnectDomainEventRegisterAny, DomainCallback>(
        i, Family::Domain, "virConnectDomainEventRegisterAny");
  });
  k.network.Add("eventRegisterAny", [](const Napi::CallbackInfo& i) {
    return Register<virNetworkPtr, virConnectNetworkEventGenericCallback,
                    virConnectNetworkEventRegisterAny, NetworkCallback>(
        i, Family::Network, "virConnectNetworkEventRegisterAny");
  });
  k.pool.Add("eventRegisterAny", [](const Napi::CallbackInfo& i) {
    return Register<virStoragePoolPtr, virConnectStoragePoolEventGenericCallback,
                    virConnectStoragePoolEventRegisterAny, PoolCallback>(
        i, Family::Pool, "virConnectStoragePoolEventRegisterAny");
  });
  k.domain.Add("eventDeregisterAny", [](const Napi::CallbackInfo& i) {
    return Deregister<virConnectDomainEventDeregisterAny>(i, Family::Domain,
                                                          "virConnectDomainEventDeregisterAny");
  });
  k.network.Add("eventDeregisterAny", [](const Napi::CallbackInfo& i) {
    return Deregister<virConnectNetworkEventDeregisterAny>(i, Family::Network,
                                                           "virConnectNetworkEventDeregisterAny");
  });
  k.pool.Add("eventDeregisterAny", [](const Napi::CallbackInfo& i) {
    return Deregister<virConnectStoragePoolEventDeregisterAny>(
        i, Family::Pool, "virConnectStoragePoolEventDeregisterAny");
  });
}

}  // namespace lv
