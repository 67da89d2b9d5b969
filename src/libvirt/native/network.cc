// virNetwork*: identity, life cycle, live updates and DHCP leases.
#include "runtime.h"

namespace lv {

namespace {

virNetworkPtr SyncNetwork(const Napi::CallbackInfo& info) {
  return LiveHandle(info.Env(), UnwrapNetwork(info.Env(), info[0]), VIR_ERR_INVALID_NETWORK,
                    "network");
}

Napi::Value GetName(const Napi::CallbackInfo& info) {
  const char* name = virNetworkGetName(SyncNetwork(info));
  return Napi::String::New(info.Env(), name != nullptr ? name : "");
}

Napi::Value GetUUIDString(const Napi::CallbackInfo& info) {
  char buf[VIR_UUID_STRING_BUFLEN];
  if (virNetworkGetUUIDString(SyncNetwork(info), buf) < 0)
    ThrowLibvirt(info.Env(), TakeCallError());
  return Napi::String::New(info.Env(), buf);
}

Napi::Value GetUUID(const Napi::CallbackInfo& info) {
  unsigned char buf[VIR_UUID_BUFLEN];
  if (virNetworkGetUUID(SyncNetwork(info), buf) < 0) ThrowLibvirt(info.Env(), TakeCallError());
  return Napi::Buffer<unsigned char>::Copy(info.Env(), buf, VIR_UUID_BUFLEN);
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  ReleaseHandle(info.Env(), UnwrapNetwork(info.Env(), info[0]));
  return info.Env().Undefined();
}

template <int (*F)(virNetworkPtr)>
Napi::Value NoArgs(const Napi::CallbackInfo& info, const char* name, bool boolean) {
  return Async(info, [name, boolean](Call& c) {
    virNetworkPtr n = c.Network(0);
    c.Timeout(1);
    if (boolean) return RunBool(c, name, [n] { return F(n); });
    return RunVoid(c, name, [n] { return F(n); });
  });
}

Napi::Value GetXMLDesc(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virNetworkPtr n = c.Network(0);
    unsigned int flags = c.Flags(1);
    c.Timeout(2);
    return RunString(c, "virNetworkGetXMLDesc", [n, flags] { return virNetworkGetXMLDesc(n, flags); });
  });
}

Napi::Value GetBridgeName(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virNetworkPtr n = c.Network(0);
    c.Timeout(1);
    return RunString(c, "virNetworkGetBridgeName", [n] { return virNetworkGetBridgeName(n); });
  });
}

Napi::Value GetAutostart(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virNetworkPtr n = c.Network(0);
    c.Timeout(1);
    return c.Run<int>(
        "virNetworkGetAutostart", [n](int& r) { return virNetworkGetAutostart(n, &r) == 0; },
        [](Napi::Env env, int& r) { return Napi::Boolean::New(env, r != 0); });
  });
}

Napi::Value SetAutostart(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virNetworkPtr n = c.Network(0);
    if (!c.info[1].IsBoolean()) throw Napi::TypeError::New(c.env, "autostart must be a boolean");
    int on = c.info[1].As<Napi::Boolean>().Value() ? 1 : 0;
    c.Timeout(2);
    return RunVoid(c, "virNetworkSetAutostart", [n, on] { return virNetworkSetAutostart(n, on); });
  });
}

Napi::Value Update(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virNetworkPtr n = c.Network(0);
    unsigned int command = c.UInt(1, "command");
    unsigned int section = c.UInt(2, "section");
    int parentIndex = c.Int(3, "parentIndex");
    std::string xml = c.Str(4, "xml");
    unsigned int flags = c.Flags(5);
    c.Timeout(6);
    return RunVoid(c, "virNetworkUpdate", [n, command, section, parentIndex, xml, flags] {
      return virNetworkUpdate(n, command, section, parentIndex, xml.c_str(), flags);
    });
  });
}

struct Leases {
  virNetworkDHCPLeasePtr* list = nullptr;
  int n = 0;
  Leases() = default;
  Leases(const Leases&) = delete;
  Leases& operator=(const Leases&) = delete;
  ~Leases() {
    for (int i = 0; i < n; i++) virNetworkDHCPLeaseFree(list[i]);
    free(list);
  }
};

Napi::Value OptString(Napi::Env env, const char* s) {
  return s != nullptr ? Napi::Value(Napi::String::New(env, s)) : env.Null();
}

Napi::Value GetDHCPLeases(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virNetworkPtr n = c.Network(0);
    std::optional<std::string> mac = c.OptStr(1, "mac");
    unsigned int flags = c.Flags(2);
    c.Timeout(3);
    return c.Run<Leases>(
        "virNetworkGetDHCPLeases",
        [n, mac, flags](Leases& r) {
          r.n = virNetworkGetDHCPLeases(n, mac ? mac->c_str() : nullptr, &r.list, flags);
          if (r.n < 0) {
            r.n = 0;
            return false;
          }
          return true;
        },
        [](Napi::Env env, Leases& r) {
          Napi::Array out = Napi::Array::New(env, r.n);
          for (int i = 0; i < r.n; i++) {
            virNetworkDHCPLeasePtr l = r.list[i];
            Napi::Object o = Napi::Object::New(env);
            o.Set("iface", OptString(env, l->iface));
            o.Set("expiryTime", Napi::Number::New(env, static_cast<double>(l->expirytime)));
            o.Set("type", l->type);
            o.Set("mac", OptString(env, l->mac));
            o.Set("iaid", OptString(env, l->iaid));
            o.Set("ipaddr", OptString(env, l->ipaddr));
            o.Set("prefix", l->prefix);
            o.Set("hostname", OptString(env, l->hostname));
            o.Set("clientid", OptString(env, l->clientid));
            out.Set(i, o);
          }
          return out;
        });
  });
}

}  // namespace

void ExportNetwork(Napi::Env env, Napi::Object e) {
  auto fn = [&](const char* name, Napi::Function::Callback cb) {
    e.Set(name, Napi::Function::New(env, cb, name));
  };
  fn("networkGetName", GetName);
  fn("networkGetUUIDString", GetUUIDString);
  fn("networkGetUUID", GetUUID);
  fn("networkFree", Free);
  fn("networkGetXMLDesc", GetXMLDesc);
  fn("networkGetBridgeName", GetBridgeName);
  fn("networkGetAutostart", GetAutostart);
  fn("networkSetAutostart", SetAutostart);
  fn("networkIsActive", [](const Napi::CallbackInfo& i) {
    return NoArgs<virNetworkIsActive>(i, "virNetworkIsActive", true);
  });
  fn("networkIsPersistent", [](const Napi::CallbackInfo& i) {
    return NoArgs<virNetworkIsPersistent>(i, "virNetworkIsPersistent", true);
  });
  fn("networkCreate", [](const Napi::CallbackInfo& i) {
    return NoArgs<virNetworkCreate>(i, "virNetworkCreate", false);
  });
  fn("networkDestroy", [](const Napi::CallbackInfo& i) {
    return NoArgs<virNetworkDestroy>(i, "virNetworkDestroy", false);
  });
  fn("networkUndefine", [](const Napi::CallbackInfo& i) {
    return NoArgs<virNetworkUndefine>(i, "virNetworkUndefine", false);
  });
  fn("networkUpdate", Update);
  fn("networkGetDHCPLeases", GetDHCPLeases);
}

}  // namespace lv
