// virNetwork*: identity, life cycle, live updates, DHCP leases and the ports guests hold.
#include "method.h"

namespace lv {

namespace {

Napi::Value OptString(Napi::Env env, const char* s) {
  return s != nullptr ? Napi::Value(Napi::String::New(env, s)) : env.Null();
}

Napi::Value LeaseJS(Napi::Env env, virNetworkDHCPLeasePtr l) {
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
  return o;
}

void FreePort(virNetworkPortPtr p) { virNetworkPortFree(p); }

// A port's UUID: read from the port object the list call returned, no call into the daemon.
Napi::Value PortUUID(Napi::Env env, virNetworkPortPtr p) {
  char uuid[VIR_UUID_STRING_BUFLEN];
  return virNetworkPortGetUUIDString(p, uuid) == 0 ? Napi::Value(Napi::String::New(env, uuid))
                                                   : env.Null();
}

}  // namespace

void ExportNetwork(Napi::Env env, Napi::Object e) {
  Kinds k(env, e);
  AddIdentity<virNetworkGetName, virNetworkGetUUIDString, virNetworkGetUUID>(k.network);
  k.network.Bind<ToString, virNetworkGetXMLDesc>("getXMLDesc", "virNetworkGetXMLDesc", Net{},
                                                 Flags{});
  k.network.Bind<ToString, virNetworkGetBridgeName>("getBridgeName", "virNetworkGetBridgeName",
                                                    Net{});
  k.network.Bind<ToFlag, virNetworkGetAutostart>("getAutostart", "virNetworkGetAutostart", Net{});
  k.network.Bind<ToVoid, virNetworkSetAutostart>("setAutostart", "virNetworkSetAutostart", Net{},
                                                 Bool{"autostart"});
  k.network.Bind<ToBool, virNetworkIsActive>("isActive", "virNetworkIsActive", Net{});
  k.network.Bind<ToBool, virNetworkIsPersistent>("isPersistent", "virNetworkIsPersistent", Net{});
  k.network.Bind<ToVoid, virNetworkCreate>("create", "virNetworkCreate", Net{});
  k.network.Bind<ToVoid, virNetworkDestroy>("destroy", "virNetworkDestroy", Net{});
  k.network.Bind<ToVoid, virNetworkUndefine>("undefine", "virNetworkUndefine", Net{});
  k.network.Bind<ToVoid, virNetworkUpdate>("update", "virNetworkUpdate", Net{}, UInt{"command"},
                                           UInt{"section"}, Int{"parentIndex"}, Str{"xml"}, Flags{});
  k.network.Bind<ToArray<virNetworkDHCPLeasePtr, virNetworkDHCPLeaseFree, LeaseJS, 2>,
                 virNetworkGetDHCPLeases>("getDHCPLeases", "virNetworkGetDHCPLeases", Net{},
                                          OptStr{"mac"}, Flags{});
  k.network.Bind<ToArray<virNetworkPortPtr, FreePort, PortUUID, 1>, virNetworkListAllPorts>(
      "listAllPorts", "virNetworkListAllPorts", Net{}, Flags{});
}

}  // namespace lv
