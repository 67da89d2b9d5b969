// virDomainSnapshot*: create from XML, look up, list and count on the domain; name, XML,
// parent, current, metadata, revert and delete on the snapshot.
//
// Snapshot handles are not interned like domain handles: snapshots are looked up a few times
// per reconcile, not hundreds of thousands of times a second, so each call that returns one
// gets a handle of its own holding one libvirt reference.
#include "method.h"

namespace lv {

using SnapshotBox = Box<virDomainSnapshotPtr>;

namespace {

const napi_type_tag kSnapshotTag = {0x6c69627669727406ULL, 0x736e617073686f74ULL};

void FinalizeSnapshot(napi_env, void* data, void*) {
  auto* box = static_cast<SnapshotBox*>(data);
  FreeHandle(box);
  delete box;
}

Napi::Value MakeSnapshotExternal(Napi::Env env, SnapshotBox* box) {
  napi_value v;
  if (napi_create_external(env, box, FinalizeSnapshot, nullptr, &v) != napi_ok) {
    FinalizeSnapshot(env, box, nullptr);
    throw Napi::Error::New(env, "could not create a libvirt handle");
  }
  napi_type_tag_object(env, v, &kSnapshotTag);
  return Napi::Value(env, v);
}

Napi::Value WrapSnapshot(Napi::Env env, virDomainSnapshotPtr p,
                         const std::shared_ptr<ConnState>& conn) {
  return MakeSnapshotExternal(env, new SnapshotBox{p, conn, std::string(), 1, Hold(p)});
}

SnapshotBox* UnwrapSnapshot(Napi::Env env, Napi::Value v) {
  bool ok = false;
  if (v.Type() == napi_external) napi_check_object_type_tag(env, v, &kSnapshotTag, &ok);
  if (!ok)
    throw Napi::TypeError::New(
        env, "domain snapshot must be a domain snapshot handle returned by the libvirt binding");
  void* data = nullptr;
  napi_get_value_external(env, v, &data);
  return static_cast<SnapshotBox*>(data);
}

Napi::Value GetName(const Napi::CallbackInfo& info) {
  virDomainSnapshotPtr s = LiveHandle(info.Env(), UnwrapSnapshot(info.Env(), info[0]),
                                      VIR_ERR_INVALID_DOMAIN_SNAPSHOT, "domain snapshot");
  const char* name = virDomainSnapshotGetName(s);
  return Napi::String::New(info.Env(), name != nullptr ? name : "");
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  FreeHandle(UnwrapSnapshot(info.Env(), info[0]));
  return info.Env().Undefined();
}

// What free() swaps in on the JS side: every call on it rejects as a freed handle.
Napi::Value FreedHandle(const Napi::CallbackInfo& info) {
  return MakeSnapshotExternal(info.Env(), new SnapshotBox{});
}

// virDomainFSFreeze / virDomainFSThaw through the guest agent: what a consistent disks-only
// snapshot needs around it. mountpoints null: all of them. Returns the count libvirt reports.
template <int (*F)(virDomainPtr, const char**, unsigned int, unsigned int)>
Napi::Value FSCall(const Napi::CallbackInfo& info, const char* name) {
  return Async(info, [name](Call& c) {
    virDomainPtr d = c.Domain(0);
    std::vector<std::string> points;
    Napi::Value list = c.info[1];
    if (!list.IsNull() && !list.IsUndefined()) {
      if (!list.IsArray()) throw Napi::TypeError::New(c.env, "mountpoints must be an array or null");
      Napi::Array a = list.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); i++) {
        Napi::Value v = a.Get(i);
        if (!v.IsString()) throw Napi::TypeError::New(c.env, "mountpoints must be strings");
        points.push_back(v.As<Napi::String>().Utf8Value());
      }
    }
    unsigned int flags = c.Flags(2);
    c.Timeout(3);
    return RunInt(c, name, [d, points, flags] {
      std::vector<const char*> ptrs;
      for (const auto& p : points) ptrs.push_back(p.c_str());
      return F(d, ptrs.empty() ? nullptr : ptrs.data(), static_cast<unsigned int>(ptrs.size()),
               flags);
    });
  });
}

}  // namespace

// Pins the snapshot (and, through the connection state, checks the connection is open) for
// the duration of the call, like Call::Domain does for domains.
virDomainSnapshotPtr Call::Snapshot(size_t i) {
  SnapshotBox* box = UnwrapSnapshot(env, info[i]);
  if (box->ptr == nullptr)
    throw Rejection{ErrorInfo::Make(VIR_ERR_INVALID_DOMAIN_SNAPSHOT, VIR_FROM_NONE,
                                    "the domain snapshot handle was freed")};
  TakeConn(box->conn, "domain snapshot");
  pins_.snapshot = box->held;
  return box->ptr;
}

void ExportSnapshot(Napi::Env env, Napi::Object e) {
  Kinds k(env, e);
  using ToSnapshot = ToHandle<WrapSnapshot>;
  // On the domain: (domain, …, flags).
  k.snapshot.Bind<ToSnapshot, virDomainSnapshotCreateXML>("createXML", "virDomainSnapshotCreateXML",
                                                          Dom{}, Str{"xml"}, Flags{});
  k.snapshot.Bind<ToSnapshot, virDomainSnapshotLookupByName>(
      "lookupByName", "virDomainSnapshotLookupByName", Dom{}, Str{"name"}, Flags{});
  k.snapshot.Bind<ToList<WrapSnapshot>, virDomainListAllSnapshots>(
      "listAll", "virDomainListAllSnapshots", Dom{}, Flags{});
  k.snapshot.Bind<ToInt, virDomainSnapshotNum>("num", "virDomainSnapshotNum", Dom{}, Flags{});
  k.snapshot.Bind<ToBool, virDomainHasCurrentSnapshot>("hasCurrent", "virDomainHasCurrentSnapshot",
                                                       Dom{}, Flags{});
  k.snapshot.Bind<ToSnapshot, virDomainSnapshotCurrent>("current", "virDomainSnapshotCurrent",
                                                        Dom{}, Flags{});
  // On the snapshot.
  k.snapshot.Add("getName", GetName);
  k.snapshot.Add("free", Free);
  k.snapshot.Add("freedHandle", FreedHandle);
  k.snapshot.Bind<ToString, virDomainSnapshotGetXMLDesc>("getXMLDesc", "virDomainSnapshotGetXMLDesc",
                                                         Snap{}, Flags{});
  k.snapshot.Bind<ToSnapshot, virDomainSnapshotGetParent>("getParent", "virDomainSnapshotGetParent",
                                                          Snap{}, Flags{});
  k.snapshot.Bind<ToBool, virDomainSnapshotIsCurrent>("isCurrent", "virDomainSnapshotIsCurrent",
                                                      Snap{}, Flags{});
  k.snapshot.Bind<ToBool, virDomainSnapshotHasMetadata>(
      "hasMetadata", "virDomainSnapshotHasMetadata", Snap{}, Flags{});
  k.snapshot.Bind<ToVoid, virDomainRevertToSnapshot>("revert", "virDomainRevertToSnapshot", Snap{},
                                                     Flags{});
  k.snapshot.Bind<ToVoid, virDomainSnapshotDelete>("delete", "virDomainSnapshotDelete", Snap{},
                                                   Flags{});
  // What a consistent disks-only snapshot needs around it.
  k.domain.Add("fsFreeze", [](const Napi::CallbackInfo& i) {
    return FSCall<virDomainFSFreeze>(i, "virDomainFSFreeze");
  });
  k.domain.Add("fsThaw", [](const Napi::CallbackInfo& i) {
    return FSCall<virDomainFSThaw>(i, "virDomainFSThaw");
  });
}

}  // namespace lv
