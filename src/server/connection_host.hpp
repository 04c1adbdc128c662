// What a connection needs from the server that owns it: settings, the TLS
// context, the durable store and the registry used for shutdown.  An
// interface so the connection does not depend on how the server is built.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/ssl/context.hpp>
#include <string>
#include <vector>

#include "filter/scanner.hpp"
#include "queue/envelope.hpp"
#include "smtp/session.hpp"

namespace mxgate::server {

class Connection;

class ConnectionHost {
 public:
  virtual ~ConnectionHost() = default;

  virtual const smtp::SessionSettings& session_settings(const config::Listener& listener) = 0;
  virtual const config::Timeouts& timeouts() const = 0;
  virtual smtp::SessionEnvironment& session_environment() = 0;
  virtual asio::ssl::context& tls_context() = 0;

  // Runs the blocking spool write off the network thread; the coroutine
  // resumes on its own executor with the result.
  virtual asio::awaitable<bool> store(const queue::Envelope& envelope, const std::string& content) = 0;

  // The content filter, or null when filtering is off.
  virtual const filter::Scanner* scanner() const = 0;
  // The listener's milters, parsed ([[listener]] milters).
  virtual const std::vector<milter::MilterEndpoint>& milters(const config::Listener& listener) = 0;
  // Holds a message in the quarantine, durably like store().
  virtual asio::awaitable<bool> quarantine(const queue::Envelope& envelope, const std::string& content) = 0;

  virtual void attach(Connection* connection) = 0;
  virtual void detach(Connection* connection) = 0;
};

}  // namespace mxgate::server
