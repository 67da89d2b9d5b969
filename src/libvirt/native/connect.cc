// virConnect*: open/close, host information, enumeration, lookups and the XML constructors
// for the four object kinds.
#include <cstring>

#include "runtime.h"

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

Napi::Value GetType(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virConnectPtr conn = c.Conn(0);
    c.Timeout(1);
    // libvirt returns a static string here, not one the caller frees.
    return c.Run<const char*>(
        "virConnectGetType",
        [conn](const char*& r) { return (r = virConnectGetType(conn)) != nullptr; },
        [](Napi::Env env, const char*& r) { return Napi::String::New(env, r); });
  });
}

Napi::Value GetVersion(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virConnectPtr conn = c.Conn(0);
    c.Timeout(1);
    return c.Run<unsigned long>(
        "virConnectGetVersion",
        [conn](unsigned long& r) { return virConnectGetVersion(conn, &r) == 0; },
        [](Napi::Env env, unsigned long& r) { return Napi::Number::New(env, static_cast<double>(r)); });
  });
}

Napi::Value GetLibVersion(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virConnectPtr conn = c.Conn(0);
    c.Timeout(1);
    return c.Run<unsigned long>(
        "virConnectGetLibVersion",
        [conn](unsigned long& r) { return virConnectGetLibVersion(conn, &r) == 0; },
        [](Napi::Env env, unsigned long& r) { return Napi::Number::New(env, static_cast<double>(r)); });
  });
}

Napi::Value GetHostname(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virConnectPtr conn = c.Conn(0);
    c.Timeout(1);
    return RunString(c, "virConnectGetHostname", [conn] { return virConnectGetHostname(conn); });
  });
}

Napi::Value GetURI(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virConnectPtr conn = c.Conn(0);
    c.Timeout(1);
    return RunString(c, "virConnectGetURI", [conn] { return virConnectGetURI(conn); });
  });
}

Napi::Value GetCapabilities(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virConnectPtr conn = c.Conn(0);
    c.Timeout(1);
    return RunString(c, "virConnectGetCapabilities",
                     [conn] { return virConnectGetCapabilities(conn); });
  });
}

Napi::Value GetSysinfo(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virConnectPtr conn = c.Conn(0);
    unsigned int flags = c.Flags(1);
    c.Timeout(2);
    return RunString(c, "virConnectGetSysinfo",
                     [conn, flags] { return virConnectGetSysinfo(conn, flags); });
  });
}

Napi::Value GetMaxVcpus(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virConnectPtr conn = c.Conn(0);
    std::optional<std::string> type = c.OptStr(1, "type");
    c.Timeout(2);
    return RunInt(c, "virConnectGetMaxVcpus", [conn, type] {
      return virConnectGetMaxVcpus(conn, type ? type->c_str() : nullptr);
    });
  });
}

Napi::Value IsAlive(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virConnectPtr conn = c.Conn(0);
    c.Timeout(1);
    return RunBool(c, "virConnectIsAlive", [conn] { return virConnectIsAlive(conn); });
  });
}

Napi::Value SetKeepAlive(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virConnectPtr conn = c.Conn(0);
    int interval = c.Int(1, "interval");
    unsigned int count = c.UInt(2, "count");
    c.Timeout(3);
    return RunInt(c, "virConnectSetKeepAlive",
                  [conn, interval, count] { return virConnectSetKeepAlive(conn, interval, count); });
  });
}

Napi::Value NodeGetInfo(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virConnectPtr conn = c.Conn(0);
    c.Timeout(1);
    return c.Run<virNodeInfo>(
        "virNodeGetInfo", [conn](virNodeInfo& r) { return virNodeGetInfo(conn, &r) == 0; },
        [](Napi::Env env, virNodeInfo& r) {
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
        });
  });
}

Napi::Value NodeGetFreeMemory(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virConnectPtr conn = c.Conn(0);
    c.Timeout(1);
    return c.Run<unsigned long long>(
        "virNodeGetFreeMemory",
        [conn](unsigned long long& r) {
          virResetLastError();
          r = virNodeGetFreeMemory(conn);
          // 0 is both "no memory free" and the error value; only a set error means failure.
          return !(r == 0 && virGetLastError() != nullptr);
        },
        [](Napi::Env env, unsigned long long& r) { return BigU64(env, r); });
  });
}

using CountFn = int (*)(virConnectPtr);

template <CountFn F>
Napi::Value Count(const Napi::CallbackInfo& info, const char* name) {
  return Async(info, [name](Call& c) {
    virConnectPtr conn = c.Conn(0);
    c.Timeout(1);
    return RunInt(c, name, [conn] { return F(conn); });
  });
}

Napi::Value ListAllDomains(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virConnectPtr conn = c.Conn(0);
    unsigned int flags = c.Flags(1);
    c.Timeout(2);
    return RunHandleList<virDomainPtr>(c, "virConnectListAllDomains", WrapDomain,
                                       [conn, flags](virDomainPtr** list) {
                                         return virConnectListAllDomains(conn, list, flags);
                                       });
  });
}

Napi::Value ListAllNetworks(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virConnectPtr conn = c.Conn(0);
    unsigned int flags = c.Flags(1);
    c.Timeout(2);
    return RunHandleList<virNetworkPtr>(c, "virConnectListAllNetworks", WrapNetwork,
                                        [conn, flags](virNetworkPtr** list) {
                                          return virConnectListAllNetworks(conn, list, flags);
                                        });
  });
}

Napi::Value ListAllStoragePools(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virConnectPtr conn = c.Conn(0);
    unsigned int flags = c.Flags(1);
    c.Timeout(2);
    return RunHandleList<virStoragePoolPtr>(
        c, "virConnectListAllStoragePools", WrapPool, [conn, flags](virStoragePoolPtr** list) {
          return virConnectListAllStoragePools(conn, list, flags);
        });
  });
}

// Raw UUIDs are 16 bytes (VIR_UUID_BUFLEN); accept any Uint8Array view of exactly that.
std::string RawUUID(Call& c, size_t i) {
  Napi::Value v = c.info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    throw Napi::TypeError::New(c.env, "uuid must be a Uint8Array of 16 bytes");
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  if (a.ByteLength() != VIR_UUID_BUFLEN)
    throw Napi::TypeError::New(c.env, "uuid must be a Uint8Array of 16 bytes");
  return std::string(reinterpret_cast<const char*>(a.Data()), VIR_UUID_BUFLEN);
}

// One template for the lookups that take a connection and a string key.
template <class T, T (*F)(virConnectPtr, const char*)>
Napi::Value LookupByString(const Napi::CallbackInfo& info, const char* name, const char* what,
                           Napi::Value (*wrap)(Napi::Env, T, const std::shared_ptr<ConnState>&)) {
  return Async(info, [name, what, wrap](Call& c) {
    virConnectPtr conn = c.Conn(0);
    std::string key = c.Str(1, what);
    c.Timeout(2);
    return RunHandle<T>(c, name, wrap, [conn, key] { return F(conn, key.c_str()); });
  });
}

template <class T, T (*F)(virConnectPtr, const unsigned char*)>
Napi::Value LookupByRawUUID(const Napi::CallbackInfo& info, const char* name,
                            Napi::Value (*wrap)(Napi::Env, T, const std::shared_ptr<ConnState>&)) {
  return Async(info, [name, wrap](Call& c) {
    virConnectPtr conn = c.Conn(0);
    std::string uuid = RawUUID(c, 1);
    c.Timeout(2);
    return RunHandle<T>(c, name, wrap, [conn, uuid] {
      return F(conn, reinterpret_cast<const unsigned char*>(uuid.data()));
    });
  });
}

Napi::Value LookupDomainByID(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virConnectPtr conn = c.Conn(0);
    int id = c.Int(1, "id");
    c.Timeout(2);
    return RunHandle<virDomainPtr>(c, "virDomainLookupByID", WrapDomain,
                                   [conn, id] { return virDomainLookupByID(conn, id); });
  });
}

// The XML constructors: connection, XML document, flags.
template <class T, class F>
Napi::Value FromXML(const Napi::CallbackInfo& info, const char* name,
                    Napi::Value (*wrap)(Napi::Env, T, const std::shared_ptr<ConnState>&), F f) {
  return Async(info, [name, wrap, f](Call& c) {
    virConnectPtr conn = c.Conn(0);
    std::string xml = c.Str(1, "xml");
    unsigned int flags = c.Flags(2);
    c.Timeout(3);
    return RunHandle<T>(c, name, wrap, [conn, xml, flags, f] { return f(conn, xml.c_str(), flags); });
  });
}

}  // namespace

void ExportConnect(Napi::Env env, Napi::Object e) {
  auto fn = [&](const char* name, Napi::Function::Callback cb) {
    e.Set(name, Napi::Function::New(env, cb, name));
  };
  fn("connectOpen", Open);
  fn("connectClose", Close);
  fn("connectGetType", GetType);
  fn("connectGetVersion", GetVersion);
  fn("connectGetLibVersion", GetLibVersion);
  fn("connectGetHostname", GetHostname);
  fn("connectGetURI", GetURI);
  fn("connectGetCapabilities", GetCapabilities);
  fn("connectGetSysinfo", GetSysinfo);
  fn("connectGetMaxVcpus", GetMaxVcpus);
  fn("connectIsAlive", IsAlive);
  fn("connectSetKeepAlive", SetKeepAlive);
  fn("nodeGetInfo", NodeGetInfo);
  fn("nodeGetFreeMemory", NodeGetFreeMemory);
  fn("connectNumOfDomains", [](const Napi::CallbackInfo& i) {
    return Count<virConnectNumOfDomains>(i, "virConnectNumOfDomains");
  });
  fn("connectNumOfDefinedDomains", [](const Napi::CallbackInfo& i) {
    return Count<virConnectNumOfDefinedDomains>(i, "virConnectNumOfDefinedDomains");
  });
  fn("connectNumOfNetworks", [](const Napi::CallbackInfo& i) {
    return Count<virConnectNumOfNetworks>(i, "virConnectNumOfNetworks");
  });
  fn("connectNumOfDefinedNetworks", [](const Napi::CallbackInfo& i) {
    return Count<virConnectNumOfDefinedNetworks>(i, "virConnectNumOfDefinedNetworks");
  });
  fn("connectNumOfStoragePools", [](const Napi::CallbackInfo& i) {
    return Count<virConnectNumOfStoragePools>(i, "virConnectNumOfStoragePools");
  });
  fn("connectNumOfDefinedStoragePools", [](const Napi::CallbackInfo& i) {
    return Count<virConnectNumOfDefinedStoragePools>(i, "virConnectNumOfDefinedStoragePools");
  });
  fn("connectListAllDomains", ListAllDomains);
  fn("connectListAllNetworks", ListAllNetworks);
  fn("connectListAllStoragePools", ListAllStoragePools);

  fn("domainLookupByID", LookupDomainByID);
  fn("domainLookupByName", [](const Napi::CallbackInfo& i) {
    return LookupByString<virDomainPtr, virDomainLookupByName>(i, "virDomainLookupByName", "name",
                                                               WrapDomain);
  });
  fn("domainLookupByUUIDString", [](const Napi::CallbackInfo& i) {
    return LookupByString<virDomainPtr, virDomainLookupByUUIDString>(
        i, "virDomainLookupByUUIDString", "uuid", WrapDomain);
  });
  fn("domainLookupByUUID", [](const Napi::CallbackInfo& i) {
    return LookupByRawUUID<virDomainPtr, virDomainLookupByUUID>(i, "virDomainLookupByUUID",
                                                                WrapDomain);
  });
  fn("networkLookupByName", [](const Napi::CallbackInfo& i) {
    return LookupByString<virNetworkPtr, virNetworkLookupByName>(i, "virNetworkLookupByName",
                                                                 "name", WrapNetwork);
  });
  fn("networkLookupByUUIDString", [](const Napi::CallbackInfo& i) {
    return LookupByString<virNetworkPtr, virNetworkLookupByUUIDString>(
        i, "virNetworkLookupByUUIDString", "uuid", WrapNetwork);
  });
  fn("networkLookupByUUID", [](const Napi::CallbackInfo& i) {
    return LookupByRawUUID<virNetworkPtr, virNetworkLookupByUUID>(i, "virNetworkLookupByUUID",
                                                                  WrapNetwork);
  });
  fn("storagePoolLookupByName", [](const Napi::CallbackInfo& i) {
    return LookupByString<virStoragePoolPtr, virStoragePoolLookupByName>(
        i, "virStoragePoolLookupByName", "name", WrapPool);
  });
  fn("storagePoolLookupByUUIDString", [](const Napi::CallbackInfo& i) {
    return LookupByString<virStoragePoolPtr, virStoragePoolLookupByUUIDString>(
        i, "virStoragePoolLookupByUUIDString", "uuid", WrapPool);
  });
  fn("storagePoolLookupByUUID", [](const Napi::CallbackInfo& i) {
    return LookupByRawUUID<virStoragePoolPtr, virStoragePoolLookupByUUID>(
        i, "virStoragePoolLookupByUUID", WrapPool);
  });
  fn("storagePoolLookupByTargetPath", [](const Napi::CallbackInfo& i) {
    return LookupByString<virStoragePoolPtr, virStoragePoolLookupByTargetPath>(
        i, "virStoragePoolLookupByTargetPath", "path", WrapPool);
  });
  fn("storageVolLookupByKey", [](const Napi::CallbackInfo& i) {
    return LookupByString<virStorageVolPtr, virStorageVolLookupByKey>(
        i, "virStorageVolLookupByKey", "key", WrapVol);
  });
  fn("storageVolLookupByPath", [](const Napi::CallbackInfo& i) {
    return LookupByString<virStorageVolPtr, virStorageVolLookupByPath>(
        i, "virStorageVolLookupByPath", "path", WrapVol);
  });

  fn("domainDefineXML", [](const Napi::CallbackInfo& i) {
    return FromXML<virDomainPtr>(i, "virDomainDefineXMLFlags", WrapDomain,
                                 virDomainDefineXMLFlags);
  });
  fn("domainCreateXML", [](const Napi::CallbackInfo& i) {
    return FromXML<virDomainPtr>(i, "virDomainCreateXML", WrapDomain, virDomainCreateXML);
  });
  fn("networkDefineXML", [](const Napi::CallbackInfo& i) {
    return FromXML<virNetworkPtr>(i, "virNetworkDefineXMLFlags", WrapNetwork,
                                  virNetworkDefineXMLFlags);
  });
  fn("networkCreateXML", [](const Napi::CallbackInfo& i) {
    return FromXML<virNetworkPtr>(i, "virNetworkCreateXMLFlags", WrapNetwork,
                                  virNetworkCreateXMLFlags);
  });
  fn("storagePoolDefineXML", [](const Napi::CallbackInfo& i) {
    return FromXML<virStoragePoolPtr>(i, "virStoragePoolDefineXML", WrapPool,
                                      virStoragePoolDefineXML);
  });
  fn("storagePoolCreateXML", [](const Napi::CallbackInfo& i) {
    return FromXML<virStoragePoolPtr>(i, "virStoragePoolCreateXML", WrapPool,
                                      virStoragePoolCreateXML);
  });
}

}  // namespace lv
