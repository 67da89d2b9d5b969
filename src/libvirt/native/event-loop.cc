// Why not libvirt's default event loop (virEventRegisterDefaultImpl): it polls with poll(2)
// and rebuilds its poll set after every change, so a change made from another thread writes
// to a wake-up pipe and the loop thread wakes, rebuilds and sleeps again. libvirt's remote
// driver changes its socket's watch twice per RPC (the calling thread takes the socket's I/O
// over, then gives it back) and, with keepalive on, pushes the keepalive timer on every
// reply: measured with libvirt-python on qemu:///system, registering the default loop raised
// the voluntary context switches per lookup from 1 to 4 and the client CPU per call by about
// half. Here a watch is an epoll registration, which another thread changes with one
// epoll_ctl and no wake-up; a timer change wakes the loop only when it makes the next
// deadline earlier than the one the loop sleeps towards.
//
// One more libvirt habit needs care: the remote client re-enables its socket's watch when a
// call ends and hands the socket's I/O to the next waiting thread ("passing the buck"); until
// that thread runs and disables the watch again, every callback returns without reading
// (another thread owns the I/O) while replies wait on the socket. A level-triggered loop spins
// there; measured, that spin was a third of the process's CPU with 1,000 lookups in flight.
// Two measures keep the loop asleep through that hand-over: a watch turned back on is armed
// kArmDelayMs later (through a timerfd, so the thread turning it on wakes nobody), and the
// next thread has usually turned it off again by then; and a readable descriptor whose
// callbacks read nothing and changed no watch is parked: out of the epoll set until one of
// its watches changes, or for at most kParkMs. Events and keepalive replies on an idle
// connection reach their callbacks at most kArmDelayMs later than they would otherwise.
#include "event-loop.h"

#include <libvirt/libvirt.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

namespace lv {

namespace {

constexpr int64_t kParkMs = 20;
constexpr int64_t kArmDelayMs = 2;

int64_t NowMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

struct Watch {
  int fd;
  int events;  // VIR_EVENT_HANDLE_*
  virEventHandleCallback cb;
  void* opaque;
  virFreeCallback ff;
};

struct Timer {
  int frequency;  // ms; -1 disabled, 0 every iteration
  int64_t due;
  virEventTimeoutCallback cb;
  void* opaque;
  virFreeCallback ff;
};

struct Freed {
  virFreeCallback ff;
  void* opaque;
};

class Loop {
 public:
  bool Init(std::string* why) {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (epfd_ < 0 || wake_ < 0) {
      *why = std::string("event loop: ") + std::strerror(errno);
      return false;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = wake_;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, wake_, &ev) < 0) {
      *why = std::string("event loop: ") + std::strerror(errno);
      return false;
    }
    armTimer_ = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    ev.data.fd = armTimer_;
    if (armTimer_ < 0 || epoll_ctl(epfd_, EPOLL_CTL_ADD, armTimer_, &ev) < 0) {
      *why = std::string("event loop: ") + std::strerror(errno);
      return false;
    }
    return true;
  }

  int AddHandle(int fd, int events, virEventHandleCallback cb, void* opaque, virFreeCallback ff) {
    std::lock_guard<std::mutex> lock(mu_);
    int id = nextWatch_++;
    watches_.emplace(id, Watch{fd, events, cb, opaque, ff});
    byFd_[fd].push_back(id);
    SyncFdLocked(fd);
    return id;
  }

  void UpdateHandle(int id, int events) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = watches_.find(id);
    if (it == watches_.end() || it->second.events == events) return;
    it->second.events = events;
    SyncFdLocked(it->second.fd, /*delayArm=*/true);
  }

  int RemoveHandle(int id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = watches_.find(id);
    if (it == watches_.end()) return -1;
    int fd = it->second.fd;
    // The free callback runs on the loop thread after this iteration's dispatch, which may
    // still be using `opaque` (libvirt's contract for the free callback).
    if (it->second.ff != nullptr) freed_.push_back(Freed{it->second.ff, it->second.opaque});
    watches_.erase(it);
    auto& ids = byFd_[fd];
    for (size_t i = 0; i < ids.size(); i++) {
      if (ids[i] == id) {
        ids.erase(ids.begin() + static_cast<long>(i));
        break;
      }
    }
    // Deregistered now, while the caller still has the descriptor open.
    SyncFdLocked(fd);
    if (ids.empty()) byFd_.erase(fd);
    WakeLocked();
    return 0;
  }

  int AddTimeout(int frequency, virEventTimeoutCallback cb, void* opaque, virFreeCallback ff) {
    std::lock_guard<std::mutex> lock(mu_);
    int id = nextTimer_++;
    int64_t due = frequency >= 0 ? NowMs() + frequency : INT64_MAX;
    timers_.emplace(id, Timer{frequency, due, cb, opaque, ff});
    if (due < sleepsUntil_) WakeLocked();
    return id;
  }

  void UpdateTimeout(int id, int frequency) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = timers_.find(id);
    if (it == timers_.end()) return;
    it->second.frequency = frequency;
    it->second.due = frequency >= 0 ? NowMs() + frequency : INT64_MAX;
    // A later deadline needs no wake-up: the loop wakes at the earlier one and looks again.
    if (it->second.due < sleepsUntil_) WakeLocked();
  }

  int RemoveTimeout(int id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = timers_.find(id);
    if (it == timers_.end()) return -1;
    if (it->second.ff != nullptr) freed_.push_back(Freed{it->second.ff, it->second.opaque});
    timers_.erase(it);
    WakeLocked();
    return 0;
  }

  [[noreturn]] void Run() {
    std::vector<epoll_event> ready(64);
    for (;;) {
      int timeout;
      {
        std::lock_guard<std::mutex> lock(mu_);
        int64_t now = NowMs();
        int64_t next = INT64_MAX;
        for (const auto& [id, t] : timers_) next = std::min(next, t.due);
        for (auto it = parked_.begin(); it != parked_.end();) {
          if (it->second <= now) {
            int fd = it->first;
            it = parked_.erase(it);
            SyncFdLocked(fd);
          } else {
            next = std::min(next, it->second);
            ++it;
          }
        }
        sleepsUntil_ = next;
        timeout = next == INT64_MAX ? -1
                  : next <= now     ? 0
                                    : static_cast<int>(std::min<int64_t>(next - now, INT_MAX));
      }
      int n = epoll_wait(epfd_, ready.data(), static_cast<int>(ready.size()), timeout);
      {
        std::lock_guard<std::mutex> lock(mu_);
        sleepsUntil_ = INT64_MIN;  // awake: changes need no wake-up until the next wait
        woken_ = false;
      }
      for (int i = 0; i < n; i++) {
        if (ready[i].data.fd == wake_) {
          uint64_t v;
          while (read(wake_, &v, sizeof v) > 0) {
          }
          continue;
        }
        if (ready[i].data.fd == armTimer_) {
          ArmDue();
          continue;
        }
        DispatchFd(ready[i].data.fd, ready[i].events);
      }
      DispatchTimers();
      FreeRemoved();
    }
  }

 private:
  static uint32_t ToEpoll(int events) {
    uint32_t e = 0;
    if (events & VIR_EVENT_HANDLE_READABLE) e |= EPOLLIN;
    if (events & VIR_EVENT_HANDLE_WRITABLE) e |= EPOLLOUT;
    return e;
  }

  static int FromEpoll(uint32_t e) {
    int events = 0;
    if (e & EPOLLIN) events |= VIR_EVENT_HANDLE_READABLE;
    if (e & EPOLLOUT) events |= VIR_EVENT_HANDLE_WRITABLE;
    if (e & EPOLLERR) events |= VIR_EVENT_HANDLE_ERROR;
    if (e & EPOLLHUP) events |= VIR_EVENT_HANDLE_HANGUP;
    return events;
  }

  // The epoll registration of `fd` follows the union of its watches' events. A descriptor
  // whose watches all want nothing is removed from the set: epoll would otherwise keep
  // reporting a hang-up on it, which its owner asked not to hear about yet.
  void SyncFdLocked(int fd, bool delayArm = false) {
    generation_[fd]++;
    parked_.erase(fd);
    pendingArm_.erase(fd);
    int events = 0;
    auto it = byFd_.find(fd);
    if (it != byFd_.end()) {
      for (int id : it->second) events |= watches_[id].events;
    }
    bool want = events != 0;
    bool has = registered_.count(fd) != 0;
    if (!want) {
      if (has) {
        epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
        registered_.erase(fd);
      }
      if (it == byFd_.end() || it->second.empty()) generation_.erase(fd);
      return;
    }
    if (!has && delayArm) {
      int64_t due = NowMs() + kArmDelayMs;
      pendingArm_[fd] = due;
      if (armDue_ == 0 || due < armDue_) SetArmTimerLocked(due);
      return;
    }
    epoll_event ev{};
    ev.events = ToEpoll(events);
    ev.data.fd = fd;
    if (has && registered_[fd] == ev.events) return;
    int op = has ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(epfd_, op, fd, &ev) < 0) {
      // The descriptor was closed and reused behind our back (closing drops it from the
      // set) or registered already: try the other operation.
      op = op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
      if (epoll_ctl(epfd_, op, fd, &ev) < 0) {
        registered_.erase(fd);
        return;
      }
    }
    registered_[fd] = ev.events;
  }

  void SetArmTimerLocked(int64_t due) {
    armDue_ = due;
    itimerspec spec{};
    int64_t ms = std::max<int64_t>(due - NowMs(), 1);
    spec.it_value.tv_sec = ms / 1000;
    spec.it_value.tv_nsec = (ms % 1000) * 1000000;
    timerfd_settime(armTimer_, 0, &spec, nullptr);
  }

  // The timerfd fired: arm the watches whose delay has passed.
  void ArmDue() {
    uint64_t v;
    while (read(armTimer_, &v, sizeof v) > 0) {
    }
    std::lock_guard<std::mutex> lock(mu_);
    armDue_ = 0;
    int64_t now = NowMs();
    int64_t next = INT64_MAX;
    std::vector<int> due;
    for (const auto& [fd, at] : pendingArm_) {
      if (at <= now)
        due.push_back(fd);
      else
        next = std::min(next, at);
    }
    for (int fd : due) {
      pendingArm_.erase(fd);
      SyncFdLocked(fd);
    }
    if (next != INT64_MAX) SetArmTimerLocked(next);
  }

  void WakeLocked() {
    if (woken_ || sleepsUntil_ == INT64_MIN) return;
    woken_ = true;
    uint64_t one = 1;
    ssize_t r = write(wake_, &one, sizeof one);
    (void)r;
  }

  void DispatchFd(int fd, uint32_t revents) {
    struct Call {
      int id;
      int events;
      virEventHandleCallback cb;
      void* opaque;
    };
    std::vector<Call> calls;
    uint64_t generation;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = byFd_.find(fd);
      if (it == byFd_.end()) return;
      int got = FromEpoll(revents);
      for (int id : it->second) {
        const Watch& w = watches_[id];
        // A watch turned off since epoll_wait returned hears nothing: its owner is doing the
        // I/O itself now.
        if (w.events == 0) continue;
        int events = got & (w.events | VIR_EVENT_HANDLE_ERROR | VIR_EVENT_HANDLE_HANGUP);
        if (events != 0) calls.push_back(Call{id, events, w.cb, w.opaque});
      }
      generation = generation_[fd];
    }
    // Only a plain "readable" can be parked; an error or hang-up is always delivered.
    int before = -1;
    if (revents == EPOLLIN && ioctl(fd, FIONREAD, &before) < 0) before = -1;
    for (const Call& c : calls) c.cb(c.id, fd, c.events, c.opaque);
    if (before <= 0) return;
    int after = -1;
    if (ioctl(fd, FIONREAD, &after) < 0 || after < before) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto g = generation_.find(fd);
    if (g == generation_.end() || g->second != generation || registered_.count(fd) == 0) return;
    epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
    registered_.erase(fd);
    parked_[fd] = NowMs() + kParkMs;
  }

  void DispatchTimers() {
    struct Call {
      int id;
      virEventTimeoutCallback cb;
      void* opaque;
    };
    std::vector<Call> calls;
    {
      std::lock_guard<std::mutex> lock(mu_);
      int64_t now = NowMs();
      for (auto& [id, t] : timers_) {
        if (t.frequency < 0 || t.due > now) continue;
        t.due = now + t.frequency;
        calls.push_back(Call{id, t.cb, t.opaque});
      }
    }
    for (const Call& c : calls) c.cb(c.id, c.opaque);
  }

  void FreeRemoved() {
    std::vector<Freed> freed;
    {
      std::lock_guard<std::mutex> lock(mu_);
      freed.swap(freed_);
    }
    for (const Freed& f : freed) f.ff(f.opaque);
  }

  int epfd_ = -1;
  int wake_ = -1;
  int armTimer_ = -1;
  // When the timerfd fires next (0: disarmed), and the watches waiting for it.
  int64_t armDue_ = 0;
  std::unordered_map<int, int64_t> pendingArm_;
  std::mutex mu_;
  int nextWatch_ = 1;
  int nextTimer_ = 1;
  std::unordered_map<int, Watch> watches_;
  std::unordered_map<int, std::vector<int>> byFd_;
  std::unordered_map<int, uint32_t> registered_;
  // Changes to each descriptor's watches, to tell whether a callback changed any.
  std::unordered_map<int, uint64_t> generation_;
  // Parked descriptors and when they rejoin the set at the latest.
  std::unordered_map<int, int64_t> parked_;
  std::unordered_map<int, Timer> timers_;
  std::vector<Freed> freed_;
  // The deadline of the wait in progress; INT64_MIN while the loop is awake (it looks at the
  // timers again before it next waits), INT64_MAX while it waits without a deadline.
  int64_t sleepsUntil_ = INT64_MIN;
  bool woken_ = false;
};

// Never destroyed: libvirt may call into it from any thread until the process exits.
Loop* loop = nullptr;

int AddHandle(int fd, int events, virEventHandleCallback cb, void* opaque, virFreeCallback ff) {
  return loop->AddHandle(fd, events, cb, opaque, ff);
}
void UpdateHandle(int id, int events) { loop->UpdateHandle(id, events); }
int RemoveHandle(int id) { return loop->RemoveHandle(id); }
int AddTimeout(int frequency, virEventTimeoutCallback cb, void* opaque, virFreeCallback ff) {
  return loop->AddTimeout(frequency, cb, opaque, ff);
}
void UpdateTimeout(int id, int frequency) { loop->UpdateTimeout(id, frequency); }
int RemoveTimeout(int id) { return loop->RemoveTimeout(id); }

}  // namespace

std::string StartEventLoop() {
  std::string why;
  auto* l = new Loop();
  if (!l->Init(&why)) return why;
  loop = l;
  virEventRegisterImpl(AddHandle, UpdateHandle, RemoveHandle, AddTimeout, UpdateTimeout,
                       RemoveTimeout);
  std::thread([l] {
    pthread_setname_np(pthread_self(), "libvirt-events");
    l->Run();
  }).detach();
  return "";
}

}  // namespace lv
