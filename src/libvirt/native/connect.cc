// virConnect*: open/close, host information, enumeration, lookups and the XML constructors
// for the four object kinds.
#include <cstring>

#include "method.h"

namespace lv {

namespace {

Napi::Value Open(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    std::optional<std::string> uri = c.OptStr(0, "uri");
    unsigned int flags = c.Flags(1);
    // The key under which this connection's close callback reaches the JS dispatcher.
    uint32_t closeKey = c.UInt(2, "closeKey");
    c.Timeout(3);
    auto state = std::make_shared<ConnState>();
    std::shared_ptr<EnvState> env = EnvState::Of(c.env)->shared_from_this();
    return c.Run<Owned<virConnectPtr>>(
        "virConnectOpenAuth",
        [uri, flags, env, state, closeKey](Owned<virConnectPtr>& r) {
          *r.out() = virConnectOpenAuth(uri ? uri->c_str() : nullptr, virConnectAuthPtrDefault,
                                        flags);
          if (!r) return false;
          RegisterCloseCallback(r.get(), env, state, closeKey);
          return true;
        },
        [state](Napi::Env env, Owned<virConnectPtr>& r) {
          state->ptr = r.release();
          // Once per connection, before its first call.
          state->remote = ServedByDaemon(state->ptr);
          if (state->remote) state->gate = RemoteGate();
          openConnections.fetch_add(1, std::memory_order_relaxed);
          return WrapConn(env, state);
        });
  });
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    ConnBox* box = UnwrapConn(c.env, c.info[0]);
    c.Timeout(1);
    // A close whose caller timed out still runs, or the connection would leak.
    c.mustRun = true;
    virConnectPtr p = box->state->ptr;
    if (p == nullptr) {
      // Closing twice is harmless, as in libvirt-python.
      return c.Run<int>(
          "virConnectClose", [](int& r) { return (r = 0) == 0; },
          [](Napi::Env env, int&) { return Napi::Number::New(env, 0); });
    }
    box->state->ptr = nullptr;
    EnvState::Of(c.env)->AddRegistrations(-static_cast<long>(box->state->Registrations()));
    box->state->domainCallbacks.clear();
    box->state->networkCallbacks.clear();
    box->state->poolCallbacks.clear();
    return RunInt(c, "virConnectClose", [p] {
      UnregisterCloseCallback(p);
      int left = virConnectClose(p);
      openConnections.fetch_sub(1, std::memory_order_relaxed);
      return left;
    });
  });
}

Napi::Value NodeInfoJS(Napi::Env env, virNodeInfo& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("model", Napi::String::New(env, r.model, strnlen(r.model, sizeof(r.model))));
  o.Set("memory", BigU64(env, r.memory));
  o.Set("cpus", r.cpus);
  o.Set("mhz", r.mhz);
  o.Set("nodes", r.nodes);
  o.Set("sockets", r.sockets);
  o.Set("cores", r.cores);
  o.Set("threads", r.threads);
  return o;
}

// Raw UUIDs are 16 bytes (VIR_UUID_BUFLEN); accept any Uint8Array view of exactly that.
struct RawUUID {
  std::string bytes;
};

const unsigned char* Pass(const RawUUID& u) {
  return reinterpret_cast<const unsigned char*>(u.bytes.data());
}

struct UUIDArg {
  RawUUID operator()(Call& c, size_t i) const {
    Napi::Value v = c.info[i];
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      throw Napi::TypeError::New(c.env, "uuid must be a Uint8Array of 16 bytes");
    Napi::Uint8Array a = v.As<Napi::Uint8Array>();
    if (a.ByteLength() != VIR_UUID_BUFLEN)
      throw Napi::TypeError::New(c.env, "uuid must be a Uint8Array of 16 bytes");
    return {std::string(reinterpret_cast<const char*>(a.Data()), VIR_UUID_BUFLEN)};
  }
};

Napi::Value VersionJS(Napi::Env env, unsigned long& r) {
  return Napi::Number::New(env, static_cast<double>(r));
}
using ToVersion = ToOut<unsigned long, VersionJS>;

// libvirt returns a static string here, not one the caller frees.
struct ToStaticString {
  template <auto F, class A>
  static Napi::Value Run(Call& c, const char* name, A args) {
    return c.Run<const char*>(
        name, [args](const char*& r) { return (r = Apply<F>(args)) != nullptr; },
        [](Napi::Env env, const char*& r) { return Napi::String::New(env, r); });
  }
};

}  // namespace

void ExportConnect(Napi::Env env, Napi::Object e) {
  Kinds k(env, e);
  k.connect.Add("open", Open);
  k.connect.Add("close", Close);
  k.connect.Bind<ToStaticString, virConnectGetType>("getType", "virConnectGetType", Conn{});
  k.connect.Bind<ToVersion, virConnectGetVersion>("getVersion", "virConnectGetVersion", Conn{});
  k.connect.Bind<ToVersion, virConnectGetLibVersion>("getLibVersion", "virConnectGetLibVersion",
                                                     Conn{});
  k.connect.Bind<ToString, virConnectGetHostname>("getHostname", "virConnectGetHostname", Conn{});
  k.connect.Bind<ToString, virConnectGetURI>("getURI", "virConnectGetURI", Conn{});
  k.connect.Bind<ToString, virConnectGetCapabilities>("getCapabilities",
                                                      "virConnectGetCapabilities", Conn{});
  k.connect.Bind<ToString, virConnectGetSysinfo>("getSysinfo", "virConnectGetSysinfo", Conn{},
                                                 Flags{});
  k.connect.Bind<ToString, virConnectGetDomainCapabilities>(
      "getDomainCapabilities", "virConnectGetDomainCapabilities", Conn{}, OptStr{"emulatorbin"},
      OptStr{"arch"}, OptStr{"machine"}, OptStr{"virttype"}, Flags{});
  k.connect.Bind<ToInt, virConnectGetMaxVcpus>("getMaxVcpus", "virConnectGetMaxVcpus", Conn{},
                                               OptStr{"type"});
  k.connect.Bind<ToBool, virConnectIsAlive>("isAlive", "virConnectIsAlive", Conn{});
  k.connect.Bind<ToInt, virConnectSetKeepAlive>("setKeepAlive", "virConnectSetKeepAlive", Conn{},
                                                Int{"interval"}, UInt{"count"});
  k.connect.Bind<ToOut<virNodeInfo, NodeInfoJS>, virNodeGetInfo>("nodeGetInfo", "virNodeGetInfo",
                                                                 Conn{});
  k.connect.Bind<ToBigU64<true>, virNodeGetFreeMemory>("nodeGetFreeMemory",
                                                       "virNodeGetFreeMemory", Conn{});

  // Counting and listing: (conn) and (conn, flags).
  k.domain.Bind<ToInt, virConnectNumOfDomains>("numOf", "virConnectNumOfDomains", Conn{});
  k.domain.Bind<ToInt, virConnectNumOfDefinedDomains>(
      "numOfDefined", "virConnectNumOfDefinedDomains", Conn{});
  k.network.Bind<ToInt, virConnectNumOfNetworks>("numOf", "virConnectNumOfNetworks",
                                                 Conn{});
  k.network.Bind<ToInt, virConnectNumOfDefinedNetworks>(
      "numOfDefined", "virConnectNumOfDefinedNetworks", Conn{});
  k.pool.Bind<ToInt, virConnectNumOfStoragePools>("numOf",
                                                  "virConnectNumOfStoragePools", Conn{});
  k.pool.Bind<ToInt, virConnectNumOfDefinedStoragePools>(
      "numOfDefined", "virConnectNumOfDefinedStoragePools", Conn{});
  k.domain.Bind<ToList<WrapDomain>, virConnectListAllDomains>(
      "listAll", "virConnectListAllDomains", Conn{}, Flags{});
  k.network.Bind<ToList<WrapNetwork>, virConnectListAllNetworks>(
      "listAll", "virConnectListAllNetworks", Conn{}, Flags{});
  k.pool.Bind<ToList<WrapPool>, virConnectListAllStoragePools>(
      "listAll", "virConnectListAllStoragePools", Conn{}, Flags{});

  // Lookups: (conn, key).
  using ToDomain = ToHandle<WrapDomain>;
  using ToNetwork = ToHandle<WrapNetwork>;
  using ToPool = ToHandle<WrapPool>;
  using ToVol = ToHandle<WrapVol>;
  k.domain.Bind<ToDomain, virDomainLookupByID>("lookupByID", "virDomainLookupByID", Conn{},
                                               Int{"id"});
  k.domain.Bind<ToDomain, virDomainLookupByName>("lookupByName", "virDomainLookupByName", Conn{},
                                                 Str{"name"});
  k.domain.Bind<ToDomain, virDomainLookupByUUIDString>(
      "lookupByUUIDString", "virDomainLookupByUUIDString", Conn{}, Str{"uuid"});
  k.domain.Bind<ToDomain, virDomainLookupByUUID>("lookupByUUID", "virDomainLookupByUUID", Conn{},
                                                 UUIDArg{});
  k.network.Bind<ToNetwork, virNetworkLookupByName>("lookupByName", "virNetworkLookupByName",
                                                    Conn{}, Str{"name"});
  k.network.Bind<ToNetwork, virNetworkLookupByUUIDString>(
      "lookupByUUIDString", "virNetworkLookupByUUIDString", Conn{}, Str{"uuid"});
  k.network.Bind<ToNetwork, virNetworkLookupByUUID>("lookupByUUID", "virNetworkLookupByUUID",
                                                    Conn{}, UUIDArg{});
  k.pool.Bind<ToPool, virStoragePoolLookupByName>(
      "lookupByName", "virStoragePoolLookupByName", Conn{}, Str{"name"});
  k.pool.Bind<ToPool, virStoragePoolLookupByUUIDString>(
      "lookupByUUIDString", "virStoragePoolLookupByUUIDString", Conn{}, Str{"uuid"});
  k.pool.Bind<ToPool, virStoragePoolLookupByUUID>(
      "lookupByUUID", "virStoragePoolLookupByUUID", Conn{}, UUIDArg{});
  k.pool.Bind<ToPool, virStoragePoolLookupByTargetPath>(
      "lookupByTargetPath", "virStoragePoolLookupByTargetPath", Conn{}, Str{"path"});
  k.vol.Bind<ToVol, virStorageVolLookupByKey>("lookupByKey", "virStorageVolLookupByKey",
                                              Conn{}, Str{"key"});
  k.vol.Bind<ToVol, virStorageVolLookupByPath>("lookupByPath", "virStorageVolLookupByPath",
                                               Conn{}, Str{"path"});

  // The XML constructors: (conn, xml, flags).
  k.domain.Bind<ToDomain, virDomainDefineXMLFlags>("defineXML", "virDomainDefineXMLFlags", Conn{},
                                                   Str{"xml"}, Flags{});
  k.domain.Bind<ToDomain, virDomainCreateXML>("createXML", "virDomainCreateXML", Conn{},
                                              Str{"xml"}, Flags{});
  k.network.Bind<ToNetwork, virNetworkDefineXMLFlags>("defineXML", "virNetworkDefineXMLFlags",
                                                      Conn{}, Str{"xml"}, Flags{});
  k.network.Bind<ToNetwork, virNetworkCreateXMLFlags>("createXML", "virNetworkCreateXMLFlags",
                                                      Conn{}, Str{"xml"}, Flags{});
  k.pool.Bind<ToPool, virStoragePoolDefineXML>("defineXML", "virStoragePoolDefineXML",
                                               Conn{}, Str{"xml"}, Flags{});
  k.pool.Bind<ToPool, virStoragePoolCreateXML>("createXML", "virStoragePoolCreateXML",
                                               Conn{}, Str{"xml"}, Flags{});
}

}  // namespace lv
