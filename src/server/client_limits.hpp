// Per-client limits, as Postfix's anvil(8) keeps them: concurrent sessions,
// new sessions per minute and messages (MAIL commands) per minute from one
// IP address, so one client cannot take the whole gateway.  Clients inside
// relay_networks are exempt (Postfix: smtpd_client_event_limit_exceptions =
// $mynetworks).
//
// Rates are counted in fixed 60-second windows per client starting at its
// first event (anvil_rate_time_unit).  State is kept only for clients with a
// session open or a window still running, so memory follows the active
// clients, not every address ever seen.  Pure: the clock is passed in.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <unordered_map>

namespace mxgate::server {

struct ClientLimitSettings {
  std::size_t max_connections = 50;      // concurrent per client; 0 = no limit
  std::size_t max_connection_rate = 0;   // new sessions per minute per client; 0 = no limit
  std::size_t max_message_rate = 0;      // MAIL commands per minute per client; 0 = no limit
};

class ClientLimits {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::seconds kWindow{60};

  explicit ClientLimits(ClientLimitSettings settings) : settings_(settings) {}

  enum class Admission { ok, too_many_connections, connection_rate };
  // A new session from ip; when ok, the caller must call disconnected(ip) at its end.
  Admission connect(const std::string& ip, Clock::time_point now);
  void disconnected(const std::string& ip, Clock::time_point now);
  // A MAIL command from ip: false when the client is over its message rate.
  bool message(const std::string& ip, Clock::time_point now);

  std::size_t tracked_clients() const { return clients_.size(); }

 private:
  struct Window {
    Clock::time_point start{};
    std::size_t count = 0;
    // Counts an event; false when that would exceed limit (not counted then).
    bool add(Clock::time_point now, std::size_t limit);
    bool running(Clock::time_point now) const { return count > 0 && now - start < kWindow; }
  };
  struct Client {
    std::size_t sessions = 0;
    Window connections;
    Window messages;
    bool idle(Clock::time_point now) const {
      return sessions == 0 && !connections.running(now) && !messages.running(now);
    }
  };
  void forget_if_idle(const std::string& ip, Clock::time_point now);
  // Drops every idle client; run every kSweepEvery connects so clients that
  // left while over a rate do not stay forever.
  void sweep(Clock::time_point now);
  static constexpr std::size_t kSweepEvery = 1024;

  ClientLimitSettings settings_;
  std::unordered_map<std::string, Client> clients_;
  std::size_t connects_since_sweep_ = 0;
};

}  // namespace mxgate::server
