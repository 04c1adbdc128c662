// The SMTP server: listening sockets, the accept loops, the registry of live
// connections and the shutdown sequence (SIGTERM: stop accepting, let
// sessions in flight finish within timeouts.shutdown, then return).  Owns no
// protocol logic; see src/smtp/session.hpp.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/signal_set.hpp>
#include <functional>
#include <memory>
#include <set>
#include <vector>

#include "config/config.hpp"
#include "filter/scanner.hpp"
#include "queue/spool.hpp"
#include "queue/spool_writer.hpp"
#include "server/client_limits.hpp"
#include "server/connection_host.hpp"
#include "util/result.hpp"

namespace mxgate::server {

class Server final : public ConnectionHost, private smtp::SessionEnvironment {
 public:
  // Messages are stored through writer (group commit, off the network
  // thread); on_stored is called (on the network thread) with each durably
  // stored ID.
  Server(asio::io_context& io, const config::Config& config, std::shared_ptr<asio::ssl::context> tls,
         queue::SpoolWriter& writer, std::function<void(const std::string&)> on_stored);
  ~Server() override;

  // Opens every listener; the error names the listener (or milter) that failed.
  Result<void> bind();
  // Starts accepting and handling SIGTERM/SIGINT; returns at once.
  void start();
  void shutdown();
  // Called once when shutdown begins, e.g. to cancel other waits on the loop.
  void on_shutdown(std::function<void()> callback) { on_shutdown_ = std::move(callback); }
  // Turns content filtering on: every message is scanned before it is
  // stored; quarantined ones go through quarantine (a second spool, see
  // queue/quarantine.hpp).  Both outlive the server.
  void set_filter(const filter::Scanner& scanner, queue::SpoolWriter& quarantine) {
    scanner_ = &scanner;
    quarantine_ = &quarantine;
    for (auto& settings : settings_) settings.check_recipients = scanner.checks_recipients();
  }

  // ConnectionHost
  const smtp::SessionSettings& session_settings(const config::Listener& listener) override;
  const config::Timeouts& timeouts() const override { return config_.timeouts; }
  smtp::SessionEnvironment& session_environment() override { return *this; }
  asio::ssl::context& tls_context() override { return *tls_; }
  asio::awaitable<bool> store(const queue::Envelope& envelope, const std::string& content) override;
  const filter::Scanner* scanner() const override { return scanner_; }
  const std::vector<milter::MilterEndpoint>& milters(const config::Listener& listener) override;
  asio::awaitable<bool> quarantine(const queue::Envelope& envelope, const std::string& content) override;
  void attach(Connection* connection) override;
  void detach(Connection* connection) override;

 private:
  // SessionEnvironment
  std::chrono::system_clock::time_point now() override { return std::chrono::system_clock::now(); }
  std::string new_queue_id() override { return queue::new_queue_id(); }
  bool admit_message(std::string_view client_ip) override;

  asio::awaitable<void> accept_loop(asio::ip::tcp::acceptor& acceptor, const config::Listener& listener);
  asio::awaitable<void> refuse(asio::ip::tcp::socket socket, std::string reply);
  // Stores through writer and resumes on the caller's executor.
  asio::awaitable<Result<void>> commit(queue::SpoolWriter& writer, const queue::Envelope& envelope,
                                       const std::string& content);

  asio::io_context& io_;
  const config::Config& config_;
  std::shared_ptr<asio::ssl::context> tls_;
  queue::SpoolWriter& writer_;
  const filter::Scanner* scanner_ = nullptr;
  queue::SpoolWriter* quarantine_ = nullptr;
  smtp::RelayPolicy relay_policy_;  // validated by the config parser
  std::function<void(const std::string&)> on_stored_;
  std::function<void()> on_shutdown_;
  asio::signal_set signals_;
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> acceptors_;
  std::vector<smtp::SessionSettings> settings_;  // one per listener, same order
  std::vector<std::vector<milter::MilterEndpoint>> milters_;  // one list per listener, same order
  std::set<Connection*> connections_;
  ClientLimits client_limits_;
  bool shutting_down_ = false;
};

}  // namespace mxgate::server
