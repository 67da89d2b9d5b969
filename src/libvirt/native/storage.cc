// virStoragePool* and virStorageVol*, including upload and download through a stream.
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "method.h"

namespace lv {

namespace {

// ---------------------------------------------------------------------------------------
// Pools

Napi::Value PoolInfoJS(Napi::Env env, virStoragePoolInfo& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("state", r.state);
  o.Set("capacity", BigU64(env, r.capacity));
  o.Set("allocation", BigU64(env, r.allocation));
  o.Set("available", BigU64(env, r.available));
  return o;
}

// ---------------------------------------------------------------------------------------
// Volumes

Napi::Value VolInfoJS(Napi::Env env, virStorageVolInfo& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("type", r.type);
  o.Set("capacity", BigU64(env, r.capacity));
  o.Set("allocation", BigU64(env, r.allocation));
  return o;
}

// A blocking stream bound to the volume's connection, aborted unless finished.
class VolStream {
 public:
  explicit VolStream(virStorageVolPtr vol)
      : st_(virStreamNew(virStorageVolGetConnect(vol), 0)) {}
  VolStream(const VolStream&) = delete;
  VolStream& operator=(const VolStream&) = delete;
  ~VolStream() {
    if (st_ == nullptr) return;
    if (!finished_) virStreamAbort(st_);
    virStreamFree(st_);
  }
  virStreamPtr get() const { return st_; }
  // Begins the transfer (virStorageVolUpload or virStorageVolDownload) on this stream.
  bool Start(int (*start)(virStorageVolPtr, virStreamPtr, unsigned long long, unsigned long long,
                          unsigned int),
             virStorageVolPtr vol, uint64_t offset, uint64_t length, unsigned int flags) {
    if (st_ == nullptr) return false;
    if (start(vol, st_, offset, length, flags) < 0) return Fail();
    return true;
  }
  // Keeps libvirt's error: aborting the stream would overwrite it.
  bool Fail() {
    SetThreadError(ErrorInfo::Capture());
    return false;
  }
  bool Finish() {
    if (virStreamFinish(st_) < 0) return Fail();
    finished_ = true;
    return true;
  }

 private:
  virStreamPtr st_;
  bool finished_ = false;
};

bool SystemError(const std::string& what) {
  SetThreadError(ErrorInfo::Make(VIR_ERR_SYSTEM_ERROR, VIR_FROM_STREAMS,
                                 what + ": " + strerror(errno)));
  return false;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }
  // Surfaces a failed close of a written file (delayed write errors).
  bool Close() {
    int fd = fd_;
    fd_ = -1;
    return close(fd) == 0;
  }

 private:
  int fd_;
};

constexpr size_t kChunk = 256 * 1024;

bool Upload(virStorageVolPtr vol, const std::string& path, uint64_t offset, uint64_t length,
            unsigned int flags, uint64_t& sent) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return SystemError("cannot open '" + path + "' for upload");
  VolStream st(vol);
  if (!st.Start(virStorageVolUpload, vol, offset, length, flags)) return false;
  std::vector<char> buf(kChunk);
  for (;;) {
    size_t want = kChunk;
    if (length > 0 && length - sent < want) want = static_cast<size_t>(length - sent);
    if (want == 0) break;
    ssize_t n = read(fd.get(), buf.data(), want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      SystemError("cannot read '" + path + "'");
      return false;
    }
    if (n == 0) break;
    ssize_t done = 0;
    while (done < n) {
      int m = virStreamSend(st.get(), buf.data() + done, n - done);
      if (m < 0) return st.Fail();
      done += m;
    }
    sent += static_cast<uint64_t>(n);
  }
  return st.Finish();
}

bool Download(virStorageVolPtr vol, const std::string& path, uint64_t offset, uint64_t length,
              unsigned int flags, uint64_t& received) {
  Fd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) return SystemError("cannot open '" + path + "' for download");
  VolStream st(vol);
  if (!st.Start(virStorageVolDownload, vol, offset, length, flags)) return false;
  std::vector<char> buf(kChunk);
  for (;;) {
    int n = virStreamRecv(st.get(), buf.data(), kChunk);
    if (n < 0) return st.Fail();
    if (n == 0) break;
    ssize_t done = 0;
    while (done < n) {
      ssize_t m = write(fd.get(), buf.data() + done, n - done);
      if (m < 0 && errno == EINTR) continue;
      if (m < 0) return SystemError("cannot write '" + path + "'");
      done += m;
    }
    received += static_cast<uint64_t>(n);
  }
  if (!st.Finish()) return false;
  if (!fd.Close()) return SystemError("cannot close '" + path + "'");
  return true;
}

template <bool UploadDirection>
Napi::Value Transfer(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virStorageVolPtr v = c.Vol(0);
    std::string path = c.Str(1, "path");
    uint64_t offset = c.info[2].IsUndefined() ? 0 : c.U64(2, "offset");
    uint64_t length = c.info[3].IsUndefined() ? 0 : c.U64(3, "length");
    unsigned int flags = c.Flags(4);
    c.Timeout(5);
    return c.Run<uint64_t>(
        UploadDirection ? "virStorageVolUpload" : "virStorageVolDownload",
        [v, path, offset, length, flags](uint64_t& r) {
          return UploadDirection ? Upload(v, path, offset, length, flags, r)
                                 : Download(v, path, offset, length, flags, r);
        },
        [](Napi::Env env, uint64_t& r) { return BigU64(env, r); });
  });
}

}  // namespace

void ExportStorage(Napi::Env env, Napi::Object e) {
  Kinds k(env, e);
  AddIdentity<virStoragePoolGetName, virStoragePoolGetUUIDString, virStoragePoolGetUUID>(k.pool);
  // Life cycle: (pool, flags) or (pool).
  k.pool.Bind<ToVoid, virStoragePoolBuild>("build", "virStoragePoolBuild", Pool{}, Flags{});
  k.pool.Bind<ToVoid, virStoragePoolCreate>("create", "virStoragePoolCreate", Pool{},
                                            Flags{});
  k.pool.Bind<ToVoid, virStoragePoolDelete>("delete", "virStoragePoolDelete", Pool{},
                                            Flags{});
  k.pool.Bind<ToVoid, virStoragePoolRefresh>("refresh", "virStoragePoolRefresh", Pool{},
                                             Flags{});
  k.pool.Bind<ToVoid, virStoragePoolDestroy>("destroy", "virStoragePoolDestroy", Pool{});
  k.pool.Bind<ToVoid, virStoragePoolUndefine>("undefine", "virStoragePoolUndefine", Pool{});
  k.pool.Bind<ToBool, virStoragePoolIsActive>("isActive", "virStoragePoolIsActive", Pool{});
  k.pool.Bind<ToBool, virStoragePoolIsPersistent>("isPersistent",
                                                  "virStoragePoolIsPersistent", Pool{});
  k.pool.Bind<ToInt, virStoragePoolNumOfVolumes>("numOfVolumes",
                                                 "virStoragePoolNumOfVolumes", Pool{});
  k.pool.Bind<ToOut<virStoragePoolInfo, PoolInfoJS>, virStoragePoolGetInfo>(
      "getInfo", "virStoragePoolGetInfo", Pool{});
  k.pool.Bind<ToString, virStoragePoolGetXMLDesc>("getXMLDesc", "virStoragePoolGetXMLDesc",
                                                  Pool{}, Flags{});
  k.pool.Bind<ToFlag, virStoragePoolGetAutostart>("getAutostart",
                                                  "virStoragePoolGetAutostart", Pool{});
  k.pool.Bind<ToVoid, virStoragePoolSetAutostart>("setAutostart",
                                                  "virStoragePoolSetAutostart", Pool{},
                                                  Bool{"autostart"});
  k.pool.Bind<ToList<WrapVol>, virStoragePoolListAllVolumes>(
      "listAllVolumes", "virStoragePoolListAllVolumes", Pool{}, Flags{});
  k.vol.Bind<ToHandle<WrapVol>, virStorageVolLookupByName>(
      "lookupByName", "virStorageVolLookupByName", Pool{}, Str{"name"});
  k.vol.Bind<ToHandle<WrapVol>, virStorageVolCreateXML>("createXML",
                                                        "virStorageVolCreateXML", Pool{}, Str{"xml"},
                                                        Flags{});
  k.vol.Bind<ToHandle<WrapVol>, virStorageVolCreateXMLFrom>(
      "createXMLFrom", "virStorageVolCreateXMLFrom", Pool{}, Str{"xml"}, Vol{}, Flags{});
  k.pool.Bind<ToHandle<WrapPool>, virStoragePoolLookupByVolume>(
      "lookupByVolume", "virStoragePoolLookupByVolume", Vol{});

  k.vol.Add("getName", SyncString<virStorageVolGetName>);
  k.vol.Add("getKey", SyncString<virStorageVolGetKey>);
  k.vol.Add("free", FreeHandleOf<virStorageVolPtr>);
  k.vol.Bind<ToString, virStorageVolGetPath>("getPath", "virStorageVolGetPath", Vol{});
  k.vol.Bind<ToOut<virStorageVolInfo, VolInfoJS>, virStorageVolGetInfo>(
      "getInfo", "virStorageVolGetInfo", Vol{});
  k.vol.Bind<ToString, virStorageVolGetXMLDesc>("getXMLDesc", "virStorageVolGetXMLDesc",
                                                Vol{}, Flags{});
  k.vol.Bind<ToVoid, virStorageVolDelete>("delete", "virStorageVolDelete", Vol{}, Flags{});
  k.vol.Bind<ToVoid, virStorageVolWipe>("wipe", "virStorageVolWipe", Vol{}, Flags{});
  k.vol.Bind<ToVoid, virStorageVolResize>("resize", "virStorageVolResize", Vol{},
                                          U64{"capacity"}, Flags{});
  k.vol.Add("upload", Transfer<true>);
  k.vol.Add("download", Transfer<false>);
}

}  // namespace lv
