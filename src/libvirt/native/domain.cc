// virDomain*: identity (local, synchronous), state and information, life cycle, memory and
// vCPUs, devices, metadata and guest addresses.
#include "method.h"

namespace lv {

namespace {

// The ID known when the handle was made; -1 for an inactive domain (libvirt's (unsigned)-1).
Napi::Value GetID(const Napi::CallbackInfo& info) {
  unsigned int id = virDomainGetID(SyncHandle<virDomainPtr>(info));
  return Napi::Number::New(info.Env(), id == static_cast<unsigned int>(-1) ? -1.0 : id);
}

// [state, maxMem, memory, nrVirtCpu, cpuTime]: domain.ts names them. Five named properties set
// from here would each look up the key's string and move the object to a new map on the JS
// thread, which serves every completion (issue 17: a lookup + getInfo pair's client CPU sets its
// rate when libvirtd's core is full).
Napi::Value DomainInfoJS(Napi::Env env, virDomainInfo& r) {
  Napi::Array a = Napi::Array::New(env, 5);
  a.Set(0u, Napi::Number::New(env, r.state));
  a.Set(1u, BigU64(env, r.maxMem));
  a.Set(2u, BigU64(env, r.memory));
  a.Set(3u, Napi::Number::New(env, r.nrVirtCpu));
  a.Set(4u, BigU64(env, r.cpuTime));
  return a;
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

Napi::Value InterfaceJS(Napi::Env env, virDomainInterfacePtr iface) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", iface->name != nullptr ? Napi::Value(Napi::String::New(env, iface->name))
                                       : env.Null());
  o.Set("hwaddr", iface->hwaddr != nullptr ? Napi::Value(Napi::String::New(env, iface->hwaddr))
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
  return o;
}

}  // namespace

void ExportDomain(Napi::Env env, Napi::Object e) {
  Kinds k(env, e);
  AddIdentity<virDomainGetName, virDomainGetUUIDString, virDomainGetUUID>(k.domain);
  k.domain.Add("getID", GetID);
  k.domain.Bind<ToOut<virDomainInfo, DomainInfoJS>, virDomainGetInfo>("getInfo", "virDomainGetInfo",
                                                                      Dom{});
  k.domain.Add("getState", GetState);
  k.domain.Bind<ToString, virDomainGetXMLDesc>("getXMLDesc", "virDomainGetXMLDesc", Dom{}, Flags{});
  k.domain.Bind<ToString, virDomainGetOSType>("getOSType", "virDomainGetOSType", Dom{});
  k.domain.Bind<ToBool, virDomainIsActive>("isActive", "virDomainIsActive", Dom{});
  k.domain.Bind<ToBool, virDomainIsPersistent>("isPersistent", "virDomainIsPersistent", Dom{});
  k.domain.Bind<ToBool, virDomainIsUpdated>("isUpdated", "virDomainIsUpdated", Dom{});
  k.domain.Bind<ToFlag, virDomainGetAutostart>("getAutostart", "virDomainGetAutostart", Dom{});
  k.domain.Bind<ToVoid, virDomainSetAutostart>("setAutostart", "virDomainSetAutostart", Dom{},
                                               Bool{"autostart"});
  // Life cycle: (domain, flags) or (domain).
  k.domain.Bind<ToVoid, virDomainCreateWithFlags>("create", "virDomainCreateWithFlags", Dom{},
                                                  Flags{});
  k.domain.Bind<ToVoid, virDomainShutdownFlags>("shutdown", "virDomainShutdownFlags", Dom{},
                                                Flags{});
  k.domain.Bind<ToVoid, virDomainReboot>("reboot", "virDomainReboot", Dom{}, Flags{});
  k.domain.Bind<ToVoid, virDomainReset>("reset", "virDomainReset", Dom{}, Flags{});
  k.domain.Bind<ToVoid, virDomainDestroyFlags>("destroy", "virDomainDestroyFlags", Dom{}, Flags{});
  k.domain.Bind<ToVoid, virDomainUndefineFlags>("undefine", "virDomainUndefineFlags", Dom{},
                                                Flags{});
  k.domain.Bind<ToVoid, virDomainSuspend>("suspend", "virDomainSuspend", Dom{});
  k.domain.Bind<ToVoid, virDomainResume>("resume", "virDomainResume", Dom{});
  k.domain.Bind<ToVoid, virDomainPMWakeup>("pmWakeup", "virDomainPMWakeup", Dom{}, Flags{});
  // Memory and vCPUs.
  k.domain.Bind<ToVoid, virDomainSetMemoryFlags>("setMemoryFlags", "virDomainSetMemoryFlags",
                                                 Dom{}, U64{"memory (KiB)"}, Flags{});
  k.domain.Bind<ToBigU64<false>, virDomainGetMaxMemory>("getMaxMemory",
                                                        "virDomainGetMaxMemory", Dom{});
  k.domain.Bind<ToVoid, virDomainSetVcpusFlags>("setVcpusFlags", "virDomainSetVcpusFlags", Dom{},
                                                UInt{"vcpus"}, Flags{});
  k.domain.Bind<ToInt, virDomainGetVcpusFlags>("getVcpusFlags", "virDomainGetVcpusFlags", Dom{},
                                               Flags{});
  k.domain.Add("getVcpus", GetVcpus);
  k.domain.Add("memoryStats", MemoryStats);
  k.domain.Bind<ToArray<virDomainInterfacePtr, virDomainInterfaceFree, InterfaceJS, 1>,
                virDomainInterfaceAddresses>("interfaceAddresses", "virDomainInterfaceAddresses",
                                             Dom{}, UInt{"source"}, Flags{});
  // Devices: (domain, xml, flags).
  k.domain.Bind<ToVoid, virDomainAttachDeviceFlags>("attachDeviceFlags",
                                                    "virDomainAttachDeviceFlags", Dom{}, Str{"xml"},
                                                    Flags{});
  k.domain.Bind<ToVoid, virDomainDetachDeviceFlags>("detachDeviceFlags",
                                                    "virDomainDetachDeviceFlags", Dom{}, Str{"xml"},
                                                    Flags{});
  k.domain.Bind<ToVoid, virDomainUpdateDeviceFlags>("updateDeviceFlags",
                                                    "virDomainUpdateDeviceFlags", Dom{}, Str{"xml"},
                                                    Flags{});
  k.domain.Bind<ToString, virDomainGetMetadata>("getMetadata", "virDomainGetMetadata", Dom{},
                                                Int{"type"}, OptStr{"uri"}, Flags{});
  k.domain.Bind<ToVoid, virDomainSetMetadata>("setMetadata", "virDomainSetMetadata", Dom{},
                                              Int{"type"}, OptStr{"metadata"}, OptStr{"key"},
                                              OptStr{"uri"}, Flags{});
  k.domain.Bind<ToVoid, virDomainBlockResize>("blockResize", "virDomainBlockResize", Dom{},
                                              Str{"disk"}, U64{"size"}, Flags{});
}

}  // namespace lv
