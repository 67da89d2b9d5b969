// virStoragePool* and virStorageVol*, including upload and download through a stream.
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"

namespace lv {

namespace {

// ---------------------------------------------------------------------------------------
// Pools

virStoragePoolPtr SyncPool(const Napi::CallbackInfo& info) {
  return LiveHandle(info.Env(), UnwrapPool(info.Env(), info[0]), VIR_ERR_INVALID_STORAGE_POOL,
                    "storage pool");
}

Napi::Value PoolGetName(const Napi::CallbackInfo& info) {
  const char* name = virStoragePoolGetName(SyncPool(info));
  return Napi::String::New(info.Env(), name != nullptr ? name : "");
}

Napi::Value PoolGetUUIDString(const Napi::CallbackInfo& info) {
  char buf[VIR_UUID_STRING_BUFLEN];
  if (virStoragePoolGetUUIDString(SyncPool(info), buf) < 0)
    ThrowLibvirt(info.Env(), TakeCallError());
  return Napi::String::New(info.Env(), buf);
}

Napi::Value PoolGetUUID(const Napi::CallbackInfo& info) {
  unsigned char buf[VIR_UUID_BUFLEN];
  if (virStoragePoolGetUUID(SyncPool(info), buf) < 0) ThrowLibvirt(info.Env(), TakeCallError());
  return Napi::Buffer<unsigned char>::Copy(info.Env(), buf, VIR_UUID_BUFLEN);
}

Napi::Value PoolFree(const Napi::CallbackInfo& info) {
  ReleaseHandle(info.Env(), UnwrapPool(info.Env(), info[0]));
  return info.Env().Undefined();
}

template <int (*F)(virStoragePoolPtr, unsigned int)>
Napi::Value PoolFlags(const Napi::CallbackInfo& info, const char* name) {
  return Async(info, [name](Call& c) {
    virStoragePoolPtr p = c.Pool(0);
    unsigned int flags = c.Flags(1);
    c.Timeout(2);
    return RunVoid(c, name, [p, flags] { return F(p, flags); });
  });
}

template <int (*F)(virStoragePoolPtr)>
Napi::Value PoolNoArgs(const Napi::CallbackInfo& info, const char* name, int shape) {
  return Async(info, [name, shape](Call& c) {
    virStoragePoolPtr p = c.Pool(0);
    c.Timeout(1);
    if (shape == 1) return RunBool(c, name, [p] { return F(p); });
    if (shape == 2) return RunInt(c, name, [p] { return F(p); });
    return RunVoid(c, name, [p] { return F(p); });
  });
}

Napi::Value PoolGetInfo(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virStoragePoolPtr p = c.Pool(0);
    c.Timeout(1);
    return c.Run<virStoragePoolInfo>(
        "virStoragePoolGetInfo",
        [p](virStoragePoolInfo& r) { return virStoragePoolGetInfo(p, &r) == 0; },
        [](Napi::Env env, virStoragePoolInfo& r) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("state", r.state);
          o.Set("capacity", BigU64(env, r.capacity));
          o.Set("allocation", BigU64(env, r.allocation));
          o.Set("available", BigU64(env, r.available));
          return o;
        });
  });
}

Napi::Value PoolGetXMLDesc(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virStoragePoolPtr p = c.Pool(0);
    unsigned int flags = c.Flags(1);
    c.Timeout(2);
    return RunString(c, "virStoragePoolGetXMLDesc",
                     [p, flags] { return virStoragePoolGetXMLDesc(p, flags); });
  });
}

Napi::Value PoolGetAutostart(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virStoragePoolPtr p = c.Pool(0);
    c.Timeout(1);
    return c.Run<int>(
        "virStoragePoolGetAutostart",
        [p](int& r) { return virStoragePoolGetAutostart(p, &r) == 0; },
        [](Napi::Env env, int& r) { return Napi::Boolean::New(env, r != 0); });
  });
}

Napi::Value PoolSetAutostart(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virStoragePoolPtr p = c.Pool(0);
    if (!c.info[1].IsBoolean()) throw Napi::TypeError::New(c.env, "autostart must be a boolean");
    int on = c.info[1].As<Napi::Boolean>().Value() ? 1 : 0;
    c.Timeout(2);
    return RunVoid(c, "virStoragePoolSetAutostart",
                   [p, on] { return virStoragePoolSetAutostart(p, on); });
  });
}

Napi::Value PoolListAllVolumes(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virStoragePoolPtr p = c.Pool(0);
    unsigned int flags = c.Flags(1);
    c.Timeout(2);
    return RunHandleList<virStorageVolPtr>(
        c, "virStoragePoolListAllVolumes", WrapVol,
        [p, flags](virStorageVolPtr** list) { return virStoragePoolListAllVolumes(p, list, flags); });
  });
}

Napi::Value VolLookupByName(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virStoragePoolPtr p = c.Pool(0);
    std::string name = c.Str(1, "name");
    c.Timeout(2);
    return RunHandle<virStorageVolPtr>(c, "virStorageVolLookupByName", WrapVol,
                                       [p, name] { return virStorageVolLookupByName(p, name.c_str()); });
  });
}

Napi::Value VolCreateXML(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virStoragePoolPtr p = c.Pool(0);
    std::string xml = c.Str(1, "xml");
    unsigned int flags = c.Flags(2);
    c.Timeout(3);
    return RunHandle<virStorageVolPtr>(
        c, "virStorageVolCreateXML", WrapVol,
        [p, xml, flags] { return virStorageVolCreateXML(p, xml.c_str(), flags); });
  });
}

Napi::Value VolCreateXMLFrom(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virStoragePoolPtr p = c.Pool(0);
    std::string xml = c.Str(1, "xml");
    virStorageVolPtr clone = c.Vol(2);
    unsigned int flags = c.Flags(3);
    c.Timeout(4);
    return RunHandle<virStorageVolPtr>(
        c, "virStorageVolCreateXMLFrom", WrapVol,
        [p, xml, clone, flags] { return virStorageVolCreateXMLFrom(p, xml.c_str(), clone, flags); });
  });
}

// ---------------------------------------------------------------------------------------
// Volumes

virStorageVolPtr SyncVol(const Napi::CallbackInfo& info) {
  return LiveHandle(info.Env(), UnwrapVol(info.Env(), info[0]), VIR_ERR_INVALID_STORAGE_VOL,
                    "storage volume");
}

Napi::Value VolGetName(const Napi::CallbackInfo& info) {
  const char* name = virStorageVolGetName(SyncVol(info));
  return Napi::String::New(info.Env(), name != nullptr ? name : "");
}

Napi::Value VolGetKey(const Napi::CallbackInfo& info) {
  const char* key = virStorageVolGetKey(SyncVol(info));
  return Napi::String::New(info.Env(), key != nullptr ? key : "");
}

Napi::Value VolFree(const Napi::CallbackInfo& info) {
  ReleaseHandle(info.Env(), UnwrapVol(info.Env(), info[0]));
  return info.Env().Undefined();
}

Napi::Value VolGetPath(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virStorageVolPtr v = c.Vol(0);
    c.Timeout(1);
    return RunString(c, "virStorageVolGetPath", [v] { return virStorageVolGetPath(v); });
  });
}

Napi::Value VolGetInfo(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virStorageVolPtr v = c.Vol(0);
    c.Timeout(1);
    return c.Run<virStorageVolInfo>(
        "virStorageVolGetInfo",
        [v](virStorageVolInfo& r) { return virStorageVolGetInfo(v, &r) == 0; },
        [](Napi::Env env, virStorageVolInfo& r) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("type", r.type);
          o.Set("capacity", BigU64(env, r.capacity));
          o.Set("allocation", BigU64(env, r.allocation));
          return o;
        });
  });
}

Napi::Value VolGetXMLDesc(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virStorageVolPtr v = c.Vol(0);
    unsigned int flags = c.Flags(1);
    c.Timeout(2);
    return RunString(c, "virStorageVolGetXMLDesc",
                     [v, flags] { return virStorageVolGetXMLDesc(v, flags); });
  });
}

template <int (*F)(virStorageVolPtr, unsigned int)>
Napi::Value VolFlags(const Napi::CallbackInfo& info, const char* name) {
  return Async(info, [name](Call& c) {
    virStorageVolPtr v = c.Vol(0);
    unsigned int flags = c.Flags(1);
    c.Timeout(2);
    return RunVoid(c, name, [v, flags] { return F(v, flags); });
  });
}

Napi::Value VolResize(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virStorageVolPtr v = c.Vol(0);
    uint64_t capacity = c.U64(1, "capacity");
    unsigned int flags = c.Flags(2);
    c.Timeout(3);
    return RunVoid(c, "virStorageVolResize",
                   [v, capacity, flags] { return virStorageVolResize(v, capacity, flags); });
  });
}

Napi::Value PoolLookupByVolume(const Napi::CallbackInfo& info) {
  return Async(info, [](Call& c) {
    virStorageVolPtr v = c.Vol(0);
    c.Timeout(1);
    return RunHandle<virStoragePoolPtr>(c, "virStoragePoolLookupByVolume", WrapPool,
                                        [v] { return virStoragePoolLookupByVolume(v); });
  });
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
  if (st.get() == nullptr) return false;
  if (virStorageVolUpload(vol, st.get(), offset, length, flags) < 0) return st.Fail();
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
  if (st.get() == nullptr) return false;
  if (virStorageVolDownload(vol, st.get(), offset, length, flags) < 0) return st.Fail();
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
  auto fn = [&](const char* name, Napi::Function::Callback cb) {
    e.Set(name, Napi::Function::New(env, cb, name));
  };
  fn("storagePoolGetName", PoolGetName);
  fn("storagePoolGetUUIDString", PoolGetUUIDString);
  fn("storagePoolGetUUID", PoolGetUUID);
  fn("storagePoolFree", PoolFree);
  fn("storagePoolBuild", [](const Napi::CallbackInfo& i) {
    return PoolFlags<virStoragePoolBuild>(i, "virStoragePoolBuild");
  });
  fn("storagePoolCreate", [](const Napi::CallbackInfo& i) {
    return PoolFlags<virStoragePoolCreate>(i, "virStoragePoolCreate");
  });
  fn("storagePoolDelete", [](const Napi::CallbackInfo& i) {
    return PoolFlags<virStoragePoolDelete>(i, "virStoragePoolDelete");
  });
  fn("storagePoolRefresh", [](const Napi::CallbackInfo& i) {
    return PoolFlags<virStoragePoolRefresh>(i, "virStoragePoolRefresh");
  });
  fn("storagePoolDestroy", [](const Napi::CallbackInfo& i) {
    return PoolNoArgs<virStoragePoolDestroy>(i, "virStoragePoolDestroy", 0);
  });
  fn("storagePoolUndefine", [](const Napi::CallbackInfo& i) {
    return PoolNoArgs<virStoragePoolUndefine>(i, "virStoragePoolUndefine", 0);
  });
  fn("storagePoolIsActive", [](const Napi::CallbackInfo& i) {
    return PoolNoArgs<virStoragePoolIsActive>(i, "virStoragePoolIsActive", 1);
  });
  fn("storagePoolIsPersistent", [](const Napi::CallbackInfo& i) {
    return PoolNoArgs<virStoragePoolIsPersistent>(i, "virStoragePoolIsPersistent", 1);
  });
  fn("storagePoolNumOfVolumes", [](const Napi::CallbackInfo& i) {
    return PoolNoArgs<virStoragePoolNumOfVolumes>(i, "virStoragePoolNumOfVolumes", 2);
  });
  fn("storagePoolGetInfo", PoolGetInfo);
  fn("storagePoolGetXMLDesc", PoolGetXMLDesc);
  fn("storagePoolGetAutostart", PoolGetAutostart);
  fn("storagePoolSetAutostart", PoolSetAutostart);
  fn("storagePoolListAllVolumes", PoolListAllVolumes);
  fn("storageVolLookupByName", VolLookupByName);
  fn("storageVolCreateXML", VolCreateXML);
  fn("storageVolCreateXMLFrom", VolCreateXMLFrom);
  fn("storagePoolLookupByVolume", PoolLookupByVolume);

  fn("storageVolGetName", VolGetName);
  fn("storageVolGetKey", VolGetKey);
  fn("storageVolFree", VolFree);
  fn("storageVolGetPath", VolGetPath);
  fn("storageVolGetInfo", VolGetInfo);
  fn("storageVolGetXMLDesc", VolGetXMLDesc);
  fn("storageVolDelete", [](const Napi::CallbackInfo& i) {
    return VolFlags<virStorageVolDelete>(i, "virStorageVolDelete");
  });
  fn("storageVolWipe", [](const Napi::CallbackInfo& i) {
    return VolFlags<virStorageVolWipe>(i, "virStorageVolWipe");
  });
  fn("storageVolResize", VolResize);
  fn("storageVolUpload", Transfer<true>);
  fn("storageVolDownload", Transfer<false>);
}

}  // namespace lv
