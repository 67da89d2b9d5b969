// The binding's implementation of libvirt's event loop interface (virEventRegisterImpl):
// file-descriptor watches and timers for keepalive, event callbacks, streams and close
// notifications, served by one thread that never keeps Node alive.
#pragma once

#include <string>

namespace lv {

// Registers the implementation with libvirt and starts its thread. Must run before the first
// virConnectOpen (libvirt decides at open whether a connection gets asynchronous I/O).
// Returns an empty string, or why it failed.
std::string StartEventLoop();

}  // namespace lv
