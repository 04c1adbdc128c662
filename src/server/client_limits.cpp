#include "server/client_limits.hpp"

#include <iterator>

namespace mxgate::server {

bool ClientLimits::Window::add(Clock::time_point now, std::size_t limit) {
  if (count == 0 || now - start >= kWindow) {
    start = now;
    count = 0;
  }
  if (limit != 0 && count >= limit) return false;
  ++count;
  return true;
}

ClientLimits::Admission ClientLimits::connect(const std::string& ip, Clock::time_point now) {
  if (++connects_since_sweep_ >= kSweepEvery) sweep(now);
  Client& client = clients_[ip];
  if (settings_.max_connections != 0 && client.sessions >= settings_.max_connections) {
    forget_if_idle(ip, now);
    return Admission::too_many_connections;
  }
  if (!client.connections.add(now, settings_.max_connection_rate)) {
    forget_if_idle(ip, now);
    return Admission::connection_rate;
  }
  ++client.sessions;
  return Admission::ok;
}

void ClientLimits::disconnected(const std::string& ip, Clock::time_point now) {
  auto it = clients_.find(ip);
  if (it == clients_.end()) return;
  if (it->second.sessions > 0) --it->second.sessions;
  forget_if_idle(ip, now);
}

bool ClientLimits::message(const std::string& ip, Clock::time_point now) {
  if (settings_.max_message_rate == 0) return true;
  return clients_[ip].messages.add(now, settings_.max_message_rate);
}

void ClientLimits::forget_if_idle(const std::string& ip, Clock::time_point now) {
  auto it = clients_.find(ip);
  if (it == clients_.end()) return;
  // A client over its rate must stay remembered until its window ends.
  if (it->second.idle(now)) clients_.erase(it);
}

void ClientLimits::sweep(Clock::time_point now) {
  connects_since_sweep_ = 0;
  for (auto it = clients_.begin(); it != clients_.end();) {
    it = it->second.idle(now) ? clients_.erase(it) : std::next(it);
  }
}

}  // namespace mxgate::server
