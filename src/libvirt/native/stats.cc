// virConnectGetAllDomainStats and virDomainListGetStats: bulk statistics, one RPC for many
// domains. The typed parameters are copied into plain C++ values on the worker (the libvirt
// list is freed there too), so the JS thread only builds objects: 64-bit integers become
// BigInt (CPU time in ns and byte counters outgrow 2^53), 32-bit ones and doubles Number.
#include "method.h"

namespace lv {

namespace {

struct StatParam {
  std::string field;
  int type = 0;
  union {
    int i;
    unsigned int ui;
    long long l;
    unsigned long long ul;
    double d;
    int b;
  } v{};
  std::string s;
};

struct StatRecord {
  std::string name;
  std::string uuid;
  std::vector<StatParam> params;
};

struct StatRecords {
  std::vector<StatRecord> records;
};

// Copies and frees libvirt's record list (NULL-terminated array of n records).
bool TakeRecords(int n, virDomainStatsRecordPtr* list, StatRecords& out) {
  if (n < 0) return false;
  out.records.resize(static_cast<size_t>(n));
  for (int i = 0; i < n; i++) {
    virDomainStatsRecordPtr rec = list[i];
    StatRecord& r = out.records[static_cast<size_t>(i)];
    const char* name = virDomainGetName(rec->dom);
    r.name = name != nullptr ? name : "";
    char uuid[VIR_UUID_STRING_BUFLEN];
    if (virDomainGetUUIDString(rec->dom, uuid) == 0) r.uuid = uuid;
    r.params.resize(static_cast<size_t>(rec->nparams));
    for (int j = 0; j < rec->nparams; j++) {
      const virTypedParameter& p = rec->params[j];
      StatParam& q = r.params[static_cast<size_t>(j)];
      q.field = p.field;
      q.type = p.type;
      switch (p.type) {
        case VIR_TYPED_PARAM_INT: q.v.i = p.value.i; break;
        case VIR_TYPED_PARAM_UINT: q.v.ui = p.value.ui; break;
        case VIR_TYPED_PARAM_LLONG: q.v.l = p.value.l; break;
        case VIR_TYPED_PARAM_ULLONG: q.v.ul = p.value.ul; break;
        case VIR_TYPED_PARAM_DOUBLE: q.v.d = p.value.d; break;
        case VIR_TYPED_PARAM_BOOLEAN: q.v.b = p.value.b; break;
        case VIR_TYPED_PARAM_STRING: q.s = p.value.s != nullptr ? p.value.s : ""; break;
        default: break;
      }
    }
  }
  virDomainStatsRecordListFree(list);
  return true;
}

Napi::Value ParamValue(Napi::Env env, const StatParam& p) {
  switch (p.type) {
    case VIR_TYPED_PARAM_INT: return Napi::Number::New(env, p.v.i);
    case VIR_TYPED_PARAM_UINT: return Napi::Number::New(env, p.v.ui);
    case VIR_TYPED_PARAM_LLONG: return Napi::BigInt::New(env, static_cast<int64_t>(p.v.l));
    case VIR_TYPED_PARAM_ULLONG: return BigU64(env, p.v.ul);
    case VIR_TYPED_PARAM_DOUBLE: return Napi::Number::New(env, p.v.d);
    case VIR_TYPED_PARAM_BOOLEAN: return Napi::Boolean::New(env, p.v.b != 0);
    case VIR_TYPED_PARAM_STRING: return Napi::String::New(env, p.s);
    default: return env.Undefined();
  }
}

// [{ name, uuid, params: { 'cpu.time': 123n, 'net.0.name': 'vnet0', ... } }]
Napi::Value RecordsToJS(Napi::Env env, StatRecords& r) {
  Napi::Array out = Napi::Array::New(env, r.records.size());
  for (size_t i = 0; i < r.records.size(); i++) {
    const StatRecord& rec = r.records[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", rec.name);
    o.Set("uuid", rec.uuid);
    Napi::Object params = Napi::Object::New(env);
    for (const auto& p : rec.params) params.Set(p.field, ParamValue(env, p));
    o.Set("params", params);
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

// connectGetAllDomainStats(conn, stats, flags, timeout)
Napi::Value GetAllDomainStats(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virConnectPtr conn = c.Conn(0);
    unsigned int stats = c.UInt(1, "stats");
    unsigned int flags = c.Flags(2);
    c.Timeout(3);
    return c.Run<StatRecords>(
        "virConnectGetAllDomainStats",
        [conn, stats, flags](StatRecords& r) {
          virDomainStatsRecordPtr* list = nullptr;
          // The call first: as one argument expression, `list` could be read before it is set.
          int n = virConnectGetAllDomainStats(conn, stats, &list, flags);
          return TakeRecords(n, list, r);
        },
        RecordsToJS);
  });
}

// The domains of one call, each referenced for as long as the call runs.
struct DomainList {
  std::vector<Owned<virDomainPtr>> refs;
  std::vector<virDomainPtr> ptrs;  // NULL-terminated, as virDomainListGetStats wants
};

// domainListGetStats([dom...], stats, flags, timeout)
Napi::Value ListGetStats(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    if (!c.info[0].IsArray()) throw Napi::TypeError::New(c.env, "domains must be an array");
    Napi::Array arr = c.info[0].As<Napi::Array>();
    auto doms = std::make_shared<DomainList>();
    std::shared_ptr<ConnState> conn;
    for (uint32_t i = 0; i < arr.Length(); i++) {
      DomainBox* box = UnwrapDomain(c.env, arr.Get(i));
      if (box->ptr == nullptr)
        throw Rejection{ErrorInfo::Make(VIR_ERR_INVALID_DOMAIN, VIR_FROM_NONE,
                                        "the domain handle was freed")};
      if (box->conn->ptr == nullptr)
        throw Rejection{ErrorInfo::Make(VIR_ERR_INVALID_CONN, VIR_FROM_NONE,
                                        "the connection was closed")};
      if (conn && conn != box->conn)
        throw Napi::TypeError::New(c.env, "all domains must come from one connection");
      conn = box->conn;
      virDomainRef(box->ptr);
      doms->refs.emplace_back(box->ptr);
      doms->ptrs.push_back(box->ptr);
    }
    doms->ptrs.push_back(nullptr);
    unsigned int stats = c.UInt(1, "stats");
    unsigned int flags = c.Flags(2);
    c.Timeout(3);
    c.conn = conn;
    return c.Run<StatRecords>(
        "virDomainListGetStats",
        [doms, stats, flags](StatRecords& r) {
          // libvirt refuses an empty list; no domains means no records.
          if (doms->ptrs.size() == 1) return true;
          virDomainStatsRecordPtr* list = nullptr;
          int n = virDomainListGetStats(doms->ptrs.data(), stats, &list, flags);
          bool ok = TakeRecords(n, list, r);
          // Dropped here, off the JS thread: the last reference to a domain of a closed
          // connection disposes the connection, which can be an RPC.
          doms->refs.clear();
          return ok;
        },
        RecordsToJS);
  });
}

}  // namespace

void ExportStats(Napi::Env env, Napi::Object e) {
  Kinds k(env, e);
  k.connect.Add("getAllDomainStats", GetAllDomainStats);
  k.domain.Add("listGetStats", ListGetStats);
}

}  // namespace lv
