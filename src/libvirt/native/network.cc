// virNetwork*: identity, life cycle, live updates and DHCP leases.
#include "method.h"

namespace lv {

namespace {

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
  Exports network = Exports(env, e).Of("network");
  network.Add("getName", SyncString<virNetworkGetName>);
  network.Add("getUUIDString", SyncUUIDString<virNetworkGetUUIDString>);
  network.Add("getUUID", SyncUUID<virNetworkGetUUID>);
  network.Add("free", FreeHandleOf<virNetworkPtr>);
  network.Bind<ToString, virNetworkGetXMLDesc>("getXMLDesc", "virNetworkGetXMLDesc", Net{},
                                               Flags{});
  network.Bind<ToString, virNetworkGetBridgeName>("getBridgeName", "virNetworkGetBridgeName",
                                                  Net{});
  network.Bind<ToFlag, virNetworkGetAutostart>("getAutostart", "virNetworkGetAutostart", Net{});
  network.Bind<ToVoid, virNetworkSetAutostart>("setAutostart", "virNetworkSetAutostart", Net{},
                                               Bool{"autostart"});
  network.Bind<ToBool, virNetworkIsActive>("isActive", "virNetworkIsActive", Net{});
  network.Bind<ToBool, virNetworkIsPersistent>("isPersistent", "virNetworkIsPersistent", Net{});
  network.Bind<ToVoid, virNetworkCreate>("create", "virNetworkCreate", Net{});
  network.Bind<ToVoid, virNetworkDestroy>("destroy", "virNetworkDestroy", Net{});
  network.Bind<ToVoid, virNetworkUndefine>("undefine", "virNetworkUndefine", Net{});
  network.Bind<ToVoid, virNetworkUpdate>("update", "virNetworkUpdate", Net{}, UInt{"command"},
                                         UInt{"section"}, Int{"parentIndex"}, Str{"xml"}, Flags{});
  network.Add("getDHCPLeases", GetDHCPLeases);
}

}  // namespace lv
