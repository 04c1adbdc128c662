// Real daemons (clamd, clamav-milter, opendkim) for the unit tests of the
// clients that talk to them: start one in the foreground with its output in
// a file, wait until it answers, stop it (SIGTERM, then SIGKILL after a
// grace period).  The child dies with the test (PR_SET_PDEATHSIG), so a
// crashed test leaves no daemon behind.  Plus the small helpers both test
// files need: the EICAR string, hex, files, a free loopback port, probes.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "util/result.hpp"

namespace mxgate::test_support {

// The EICAR test string, joined at run time from two halves (this file is
// then no EICAR file itself).
inline std::string eicar() {
  static const char* const kHalves[2] = {"X5O!P%@AP[4\\PZX54(P^)7CC)7}$",
                                         "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"};
  return std::string(kHalves[0]) + kHalves[1];
}

inline std::string hex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (const char c : bytes) {
    out += kHex[static_cast<unsigned char>(c) >> 4];
    out += kHex[static_cast<unsigned char>(c) & 0xf];
  }
  return out;
}

inline long long ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
}

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

inline void write_text(const std::filesystem::path& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// A loopback TCP port free at this moment (a daemon may still lose it to
// another process: callers retry).
inline std::uint16_t free_tcp_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof address;
  std::uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) == 0)
    port = ntohs(address.sin_port);
  ::close(fd);
  return port;
}

// A blocking connection with 1 s timeouts to a Unix socket (path) or to
// 127.0.0.1:port (path empty), for readiness probes; -1 when it fails.
inline int probe_connect(const std::string& path, std::uint16_t port) {
  int fd = -1;
  if (!path.empty()) {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      ::close(fd);
      return -1;
    }
  } else {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      ::close(fd);
      return -1;
    }
  }
  if (fd < 0) return -1;
  timeval second{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &second, sizeof second);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &second, sizeof second);
  return fd;
}

// Sends request, reads until reply_size bytes came (or the peer stops); the bytes read.
inline std::string probe_exchange(const std::string& path, std::uint16_t port, std::string_view request,
                                  std::size_t reply_size) {
  const int fd = probe_connect(path, port);
  if (fd < 0) return {};
  std::string reply;
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
    char buffer[256];
    while (reply.size() < reply_size) {
      const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) break;
      reply.append(buffer, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  return reply;
}

// clamd answers zPING with PONG.
inline bool clamd_pings(const std::filesystem::path& socket_path) {
  return probe_exchange(socket_path.string(), 0, std::string_view("zPING\0", 6), 5) ==
         std::string_view("PONG\0", 5);
}

// One daemon in the foreground; its stdout and stderr go to a file.
class Daemon {
 public:
  static constexpr std::chrono::seconds kStartTimeout{30};

  Daemon(std::string name, std::chrono::milliseconds stop_grace) : name_(std::move(name)), stop_grace_(stop_grace) {}
  ~Daemon() { stop(); }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Starts argv (argv[0] a full path) and waits, at most kStartTimeout,
  // until ready() is true; an error with the daemon's output otherwise.
  Result<void> start(const std::vector<std::string>& argv, const std::filesystem::path& output,
                     const std::function<bool()>& ready) {
    using Clock = std::chrono::steady_clock;
    output_ = output;
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    const int out = ::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (out < 0 || null < 0) return make_error("cannot open " + output.string() + " or /dev/null");
    const pid_t parent = ::getpid();
    const auto start = Clock::now();
    pid_ = ::fork();
    if (pid_ == 0) {
      // Only async-signal-safe calls between fork and exec.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(null, 0);
      ::dup2(out, 1);
      ::dup2(out, 2);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(out);
    ::close(null);
    if (pid_ < 0) return make_error(std::string("fork: ") + std::strerror(errno));
    while (Clock::now() - start < kStartTimeout) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return make_error(name_ + " exited with status " + std::to_string(status) + ":\n" + read_text(output));
      }
      if (ready()) {
        start_time_ = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
        return {};
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return make_error(name_ + " was not ready within " + std::to_string(kStartTimeout.count()) + " s:\n" +
                      read_text(output));
  }

  // SIGTERM, then SIGKILL after the grace period; reaps the child.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    const auto until = std::chrono::steady_clock::now() + stop_grace_;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > until) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    pid_ = -1;
  }

  bool running() const { return pid_ > 0; }
  std::chrono::milliseconds start_time() const { return start_time_; }
  std::string output() const { return read_text(output_); }

 private:
  std::string name_;
  std::chrono::milliseconds stop_grace_;
  std::filesystem::path output_;
  pid_t pid_ = -1;
  std::chrono::milliseconds start_time_{0};
};

}  // namespace mxgate::test_support
