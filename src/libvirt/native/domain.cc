// virDomain*: identity (local, synchronous), state and information, life cycle, memory and
// vCPUs, devices, metadata and guest addresses.
#include "runtime.h"

namespace lv {

namespace {

virDomainPtr SyncDomain(const Napi::CallbackInfo& info) {
  return LiveHandle(info.Env(), UnwrapDomain(info.Env(), info[0]), VIR_ERR_INVALID_DOMAIN,
                    "domain");
}

Napi::Value GetName(const Napi::CallbackInfo& info) {
  const char* name = virDomainGetName(SyncDomain(info));
  return Napi::String::New(info.Env(), name != nullptr ? name : "");
}

Napi::Value GetUUIDString(const Napi::CallbackInfo& info) {
  char buf[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(SyncDomain(info), buf) < 0) ThrowLibvirt(info.Env(), TakeCallError());
  return Napi::String::New(info.Env(), buf);
}

Napi::Value GetUUID(const Napi::CallbackInfo& info) {
  unsigned char buf[VIR_UUID_BUFLEN];
  if (virDomainGetUUID(SyncDomain(info), buf) < 0) ThrowLibvirt(info.Env(), TakeCallError());
  return Napi::Buffer<unsigned char>::Copy(info.Env(), buf, VIR_UUID_BUFLEN);
}

// The ID known when the handle was made; -1 for an inactive domain (libvirt's (unsigned)-1).
Napi::Value GetID(const Napi::CallbackInfo& info) {
  unsigned int id = virDomainGetID(SyncDomain(info));
  return Napi::Number::New(info.Env(), id == static_cast<unsigned int>(-1) ? -1.0 : id);
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  ReleaseHandle(info.Env(), UnwrapDomain(info.Env(), info[0]));
  return info.Env().Undefined();
}

// Domain calls shaped (handle, flags, timeout) -> int.
template <int (*F)(virDomainPtr, unsigned int)>
Napi::Value FlagsVoid(const Napi::CallbackInfo& info, const char* name) {
  return Async(info, [name](Call& c) {
    virDomainPtr d = c.Domain(0);
    unsigned int flags = c.Flags(1);
    c.Timeout(2);
    return RunVoid(c, name, [d, flags] { return F(d, flags); });
  });
}

template <int (*F)(virDomainPtr)>
Napi::Value NoArgs(const Napi::CallbackInfo& info, const char* name, bool boolean) {
  return Async(info, [name, boolean](Call& c) {
    virDomainPtr d = c.Domain(0);
    c.Timeout(1);
    if (boolean) return RunBool(c, name, [d] { return F(d); });
    return RunVoid(c, name, [d] { return F(d); });
  });
}

Napi::Value GetInfo(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virDomainPtr d = c.Domain(0);
    c.Timeout(1);
    return c.Run<virDomainInfo>(
        "virDomainGetInfo", [d](virDomainInfo& r) { return virDomainGetInfo(d, &r) == 0; },
        [](Napi::Env env, virDomainInfo& r) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("state", static_cast<uint32_t>(r.state));
          o.Set("maxMem", BigU64(env, r.maxMem));
          o.Set("memory", BigU64(env, r.memory));
          o.Set("nrVirtCpu", static_cast<uint32_t>(r.nrVirtCpu));
          o.Set("cpuTime", BigU64(env, r.cpuTime));
          return o;
        });
  });
}

Napi::Value GetState(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virDomainPtr d = c.Domain(0);
    unsigned int flags = c.Flags(1);
    c.Timeout(2);
    return c.Run<std::pair<int, int>>(
        "virDomainGetState",
        [d, flags](std::pair<int, int>& r) {
          return virDomainGetState(d, &r.first, &r.second, flags) == 0;
        },
        [](Napi::Env env, std::pair<int, int>& r) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("state", r.first);
          o.Set("reason", r.second);
          return o;
        });
  });
}

Napi::Value GetXMLDesc(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virDomainPtr d = c.Domain(0);
    unsigned int flags = c.Flags(1);
    c.Timeout(2);
    return RunString(c, "virDomainGetXMLDesc", [d, flags] { return virDomainGetXMLDesc(d, flags); });
  });
}

Napi::Value GetOSType(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virDomainPtr d = c.Domain(0);
    c.Timeout(1);
    return RunString(c, "virDomainGetOSType", [d] { return virDomainGetOSType(d); });
  });
}

Napi::Value GetAutostart(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virDomainPtr d = c.Domain(0);
    c.Timeout(1);
    return c.Run<int>(
        "virDomainGetAutostart", [d](int& r) { return virDomainGetAutostart(d, &r) == 0; },
        [](Napi::Env env, int& r) { return Napi::Boolean::New(env, r != 0); });
  });
}

Napi::Value SetAutostart(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virDomainPtr d = c.Domain(0);
    if (!c.info[1].IsBoolean()) throw Napi::TypeError::New(c.env, "autostart must be a boolean");
    int on = c.info[1].As<Napi::Boolean>().Value() ? 1 : 0;
    c.Timeout(2);
    return RunVoid(c, "virDomainSetAutostart", [d, on] { return virDomainSetAutostart(d, on); });
  });
}

Napi::Value SetMemoryFlags(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virDomainPtr d = c.Domain(0);
    uint64_t kib = c.U64(1, "memory (KiB)");
    unsigned int flags = c.Flags(2);
    c.Timeout(3);
    return RunVoid(c, "virDomainSetMemoryFlags",
                   [d, kib, flags] { return virDomainSetMemoryFlags(d, kib, flags); });
  });
}

Napi::Value GetMaxMemory(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virDomainPtr d = c.Domain(0);
    c.Timeout(1);
    return c.Run<unsigned long>(
        "virDomainGetMaxMemory",
        [d](unsigned long& r) { return (r = virDomainGetMaxMemory(d)) != 0; },
        [](Napi::Env env, unsigned long& r) { return BigU64(env, r); });
  });
}

Napi::Value SetVcpusFlags(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virDomainPtr d = c.Domain(0);
    unsigned int n = c.UInt(1, "vcpus");
    unsigned int flags = c.Flags(2);
    c.Timeout(3);
    return RunVoid(c, "virDomainSetVcpusFlags",
                   [d, n, flags] { return virDomainSetVcpusFlags(d, n, flags); });
  });
}

Napi::Value GetVcpusFlags(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virDomainPtr d = c.Domain(0);
    unsigned int flags = c.Flags(1);
    c.Timeout(2);
    return RunInt(c, "virDomainGetVcpusFlags", [d, flags] { return virDomainGetVcpusFlags(d, flags); });
  });
}

// virDomainGetVcpus needs its buffers sized by the caller: the domain's vCPU count (from
// virDomainGetInfo) and the host's CPU count (virNodeGetCPUMap, which counts CPUs that are
// present even when offline, as the affinity bitmaps do). Both are read on the worker, in the
// same call, as libvirt-python does, so the answer is consistent with one moment.
struct Vcpus {
  std::vector<virVcpuInfo> info;
  std::vector<unsigned char> maps;
  int mapLen = 0;
  int hostCpus = 0;
};

Napi::Value GetVcpus(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virDomainPtr d = c.Domain(0);
    c.Timeout(1);
    return c.Run<Vcpus>(
        "virDomainGetVcpus",
        [d](Vcpus& r) {
          virDomainInfo di;
          if (virDomainGetInfo(d, &di) < 0) return false;
          r.hostCpus = virNodeGetCPUMap(virDomainGetConnect(d), nullptr, nullptr, 0);
          if (r.hostCpus < 0) {
            virNodeInfo ni;
            if (virNodeGetInfo(virDomainGetConnect(d), &ni) < 0) return false;
            r.hostCpus = static_cast<int>(VIR_NODEINFO_MAXCPUS(ni));
          }
          r.mapLen = VIR_CPU_MAPLEN(r.hostCpus);
          r.info.resize(di.nrVirtCpu > 0 ? di.nrVirtCpu : 1);
          r.maps.assign(r.info.size() * static_cast<size_t>(r.mapLen), 0);
          int n = virDomainGetVcpus(d, r.info.data(), static_cast<int>(r.info.size()),
                                    r.maps.data(), r.mapLen);
          if (n < 0) return false;
          r.info.resize(n);
          return true;
        },
        [](Napi::Env env, Vcpus& r) {
          Napi::Array out = Napi::Array::New(env, r.info.size());
          for (size_t i = 0; i < r.info.size(); i++) {
            const virVcpuInfo& v = r.info[i];
            Napi::Object o = Napi::Object::New(env);
            o.Set("number", Napi::Number::New(env, v.number));
            o.Set("state", Napi::Number::New(env, v.state));
            o.Set("cpuTime", BigU64(env, v.cpuTime));
            o.Set("cpu", Napi::Number::New(env, v.cpu));
            const unsigned char* map = r.maps.data() + i * static_cast<size_t>(r.mapLen);
            Napi::Array affinity = Napi::Array::New(env, r.hostCpus);
            for (int cpu = 0; cpu < r.hostCpus; cpu++)
              affinity.Set(static_cast<uint32_t>(cpu),
                           Napi::Boolean::New(env, VIR_CPU_USABLE(map, r.mapLen, 0, cpu) != 0));
            o.Set("affinity", affinity);
            out.Set(static_cast<uint32_t>(i), o);
          }
          return out;
        });
  });
}

const char* MemoryStatName(int tag) {
  switch (tag) {
    case VIR_DOMAIN_MEMORY_STAT_SWAP_IN: return "swapIn";
    case VIR_DOMAIN_MEMORY_STAT_SWAP_OUT: return "swapOut";
    case VIR_DOMAIN_MEMORY_STAT_MAJOR_FAULT: return "majorFault";
    case VIR_DOMAIN_MEMORY_STAT_MINOR_FAULT: return "minorFault";
    case VIR_DOMAIN_MEMORY_STAT_UNUSED: return "unused";
    case VIR_DOMAIN_MEMORY_STAT_AVAILABLE: return "available";
    case VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON: return "actual";
    case VIR_DOMAIN_MEMORY_STAT_RSS: return "rss";
    case VIR_DOMAIN_MEMORY_STAT_USABLE: return "usable";
    case VIR_DOMAIN_MEMORY_STAT_LAST_UPDATE: return "lastUpdate";
    case VIR_DOMAIN_MEMORY_STAT_DISK_CACHES: return "diskCaches";
    case VIR_DOMAIN_MEMORY_STAT_HUGETLB_PGALLOC: return "hugetlbPgalloc";
    case VIR_DOMAIN_MEMORY_STAT_HUGETLB_PGFAIL: return "hugetlbPgfail";
    default: return nullptr;
  }
}

Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virDomainPtr d = c.Domain(0);
    unsigned int flags = c.Flags(1);
    c.Timeout(2);
    using Stats = std::vector<virDomainMemoryStatStruct>;
    return c.Run<Stats>(
        "virDomainMemoryStats",
        [d, flags](Stats& r) {
          r.resize(VIR_DOMAIN_MEMORY_STAT_NR);
          int n = virDomainMemoryStats(d, r.data(), VIR_DOMAIN_MEMORY_STAT_NR, flags);
          if (n < 0) return false;
          r.resize(n);
          return true;
        },
        [](Napi::Env env, Stats& r) {
          Napi::Object o = Napi::Object::New(env);
          for (const auto& s : r) {
            const char* name = MemoryStatName(s.tag);
            if (name != nullptr) o.Set(name, BigU64(env, s.val));
          }
          return o;
        });
  });
}

struct Interfaces {
  virDomainInterfacePtr* list = nullptr;
  int n = 0;
  Interfaces() = default;
  Interfaces(const Interfaces&) = delete;
  Interfaces& operator=(const Interfaces&) = delete;
  ~Interfaces() {
    for (int i = 0; i < n; i++) virDomainInterfaceFree(list[i]);
    free(list);
  }
};

Napi::Value InterfaceAddresses(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virDomainPtr d = c.Domain(0);
    unsigned int source = c.UInt(1, "source");
    unsigned int flags = c.Flags(2);
    c.Timeout(3);
    return c.Run<Interfaces>(
        "virDomainInterfaceAddresses",
        [d, source, flags](Interfaces& r) {
          r.n = virDomainInterfaceAddresses(d, &r.list, source, flags);
          if (r.n < 0) {
            r.n = 0;
            return false;
          }
          return true;
        },
        [](Napi::Env env, Interfaces& r) {
          Napi::Array out = Napi::Array::New(env, r.n);
          for (int i = 0; i < r.n; i++) {
            virDomainInterfacePtr iface = r.list[i];
            Napi::Object o = Napi::Object::New(env);
            o.Set("name", iface->name != nullptr ? Napi::Value(Napi::String::New(env, iface->name))
                                                 : env.Null());
            o.Set("hwaddr", iface->hwaddr != nullptr
                                ? Napi::Value(Napi::String::New(env, iface->hwaddr))
                                : env.Null());
            Napi::Array addrs = Napi::Array::New(env, iface->naddrs);
            for (unsigned int j = 0; j < iface->naddrs; j++) {
              Napi::Object a = Napi::Object::New(env);
              a.Set("type", iface->addrs[j].type);
              a.Set("addr", iface->addrs[j].addr != nullptr ? iface->addrs[j].addr : "");
              a.Set("prefix", iface->addrs[j].prefix);
              addrs.Set(j, a);
            }
            o.Set("addrs", addrs);
            out.Set(i, o);
          }
          return out;
        });
  });
}

template <int (*F)(virDomainPtr, const char*, unsigned int)>
Napi::Value DeviceCall(const Napi::CallbackInfo& info, const char* name) {
  return Async(info, [name](Call& c) {
    virDomainPtr d = c.Domain(0);
    std::string xml = c.Str(1, "xml");
    unsigned int flags = c.Flags(2);
    c.Timeout(3);
    return RunVoid(c, name, [d, xml, flags] { return F(d, xml.c_str(), flags); });
  });
}

Napi::Value GetMetadata(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virDomainPtr d = c.Domain(0);
    int type = c.Int(1, "type");
    std::optional<std::string> uri = c.OptStr(2, "uri");
    unsigned int flags = c.Flags(3);
    c.Timeout(4);
    return RunString(c, "virDomainGetMetadata", [d, type, uri, flags] {
      return virDomainGetMetadata(d, type, uri ? uri->c_str() : nullptr, flags);
    });
  });
}

Napi::Value SetMetadata(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virDomainPtr d = c.Domain(0);
    int type = c.Int(1, "type");
    std::optional<std::string> metadata = c.OptStr(2, "metadata");
    std::optional<std::string> key = c.OptStr(3, "key");
    std::optional<std::string> uri = c.OptStr(4, "uri");
    unsigned int flags = c.Flags(5);
    c.Timeout(6);
    return RunVoid(c, "virDomainSetMetadata", [d, type, metadata, key, uri, flags] {
      return virDomainSetMetadata(d, type, metadata ? metadata->c_str() : nullptr,
                                  key ? key->c_str() : nullptr, uri ? uri->c_str() : nullptr,
                                  flags);
    });
  });
}

Napi::Value BlockResize(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virDomainPtr d = c.Domain(0);
    std::string disk = c.Str(1, "disk");
    uint64_t size = c.U64(2, "size");
    unsigned int flags = c.Flags(3);
    c.Timeout(4);
    return RunVoid(c, "virDomainBlockResize", [d, disk, size, flags] {
      return virDomainBlockResize(d, disk.c_str(), size, flags);
    });
  });
}

}  // namespace

void ExportDomain(Napi::Env env, Napi::Object e) {
  auto fn = [&](const char* name, Napi::Function::Callback cb) {
    e.Set(name, Napi::Function::New(env, cb, name));
  };
  fn("domainGetName", GetName);
  fn("domainGetUUIDString", GetUUIDString);
  fn("domainGetUUID", GetUUID);
  fn("domainGetID", GetID);
  fn("domainFree", Free);
  fn("domainGetInfo", GetInfo);
  fn("domainGetState", GetState);
  fn("domainGetXMLDesc", GetXMLDesc);
  fn("domainGetOSType", GetOSType);
  fn("domainIsActive", [](const Napi::CallbackInfo& i) {
    return NoArgs<virDomainIsActive>(i, "virDomainIsActive", true);
  });
  fn("domainIsPersistent", [](const Napi::CallbackInfo& i) {
    return NoArgs<virDomainIsPersistent>(i, "virDomainIsPersistent", true);
  });
  fn("domainIsUpdated", [](const Napi::CallbackInfo& i) {
    return NoArgs<virDomainIsUpdated>(i, "virDomainIsUpdated", true);
  });
  fn("domainGetAutostart", GetAutostart);
  fn("domainSetAutostart", SetAutostart);
  fn("domainCreate", [](const Napi::CallbackInfo& i) {
    return FlagsVoid<virDomainCreateWithFlags>(i, "virDomainCreateWithFlags");
  });
  fn("domainShutdown", [](const Napi::CallbackInfo& i) {
    return FlagsVoid<virDomainShutdownFlags>(i, "virDomainShutdownFlags");
  });
  fn("domainReboot", [](const Napi::CallbackInfo& i) {
    return FlagsVoid<virDomainReboot>(i, "virDomainReboot");
  });
  fn("domainReset", [](const Napi::CallbackInfo& i) {
    return FlagsVoid<virDomainReset>(i, "virDomainReset");
  });
  fn("domainDestroy", [](const Napi::CallbackInfo& i) {
    return FlagsVoid<virDomainDestroyFlags>(i, "virDomainDestroyFlags");
  });
  fn("domainUndefine", [](const Napi::CallbackInfo& i) {
    return FlagsVoid<virDomainUndefineFlags>(i, "virDomainUndefineFlags");
  });
  fn("domainSuspend", [](const Napi::CallbackInfo& i) {
    return NoArgs<virDomainSuspend>(i, "virDomainSuspend", false);
  });
  fn("domainResume", [](const Napi::CallbackInfo& i) {
    return NoArgs<virDomainResume>(i, "virDomainResume", false);
  });
  fn("domainSetMemoryFlags", SetMemoryFlags);
  fn("domainGetMaxMemory", GetMaxMemory);
  fn("domainSetVcpusFlags", SetVcpusFlags);
  fn("domainGetVcpusFlags", GetVcpusFlags);
  fn("domainGetVcpus", GetVcpus);
  fn("domainMemoryStats", MemoryStats);
  fn("domainInterfaceAddresses", InterfaceAddresses);
  fn("domainAttachDeviceFlags", [](const Napi::CallbackInfo& i) {
    return DeviceCall<virDomainAttachDeviceFlags>(i, "virDomainAttachDeviceFlags");
  });
  fn("domainDetachDeviceFlags", [](const Napi::CallbackInfo& i) {
    return DeviceCall<virDomainDetachDeviceFlags>(i, "virDomainDetachDeviceFlags");
  });
  fn("domainUpdateDeviceFlags", [](const Napi::CallbackInfo& i) {
    return DeviceCall<virDomainUpdateDeviceFlags>(i, "virDomainUpdateDeviceFlags");
  });
  fn("domainGetMetadata", GetMetadata);
  fn("domainSetMetadata", SetMetadata);
  fn("domainBlockResize", BlockResize);
}

}  // namespace lv
