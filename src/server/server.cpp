#include "server/server.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/ip/v6_only.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>

#include "server/connection.hpp"
#include "util/log.hpp"

namespace mxgate::server {

Server::Server(asio::io_context& io, const config::Config& config, std::shared_ptr<asio::ssl::context> tls,
               queue::SpoolWriter& writer, std::function<void(const std::string&)> on_stored)
    : io_(io),
      config_(config),
      tls_(std::move(tls)),
      writer_(writer),
      relay_policy_(smtp::RelayPolicy::from_config(config).value()),
      on_stored_(std::move(on_stored)),
      signals_(io, SIGTERM, SIGINT),
      client_limits_(ClientLimitSettings{config.limits.max_connections_per_client,
                                         config.limits.max_connection_rate_per_client,
                                         config.limits.max_message_rate_per_client}) {
  for (const auto& listener : config_.listeners)
    settings_.push_back(smtp::SessionSettings{config_.hostname, listener.tls, config_.limits, &relay_policy_});
}

Server::~Server() = default;

Result<void> Server::bind() {
  milters_.clear();
  for (std::size_t i = 0; i < config_.listeners.size(); ++i) {
    std::vector<milter::MilterEndpoint> endpoints;
    for (std::size_t j = 0; j < config_.listeners[i].milters.size(); ++j) {
      auto endpoint = milter::parse_milter_endpoint(config_.listeners[i].milters[j]);
      if (!endpoint) {
        return make_error("listener[" + std::to_string(i) + "].milters[" + std::to_string(j) + "]: " +
                          endpoint.error());
      }
      endpoints.push_back(std::move(endpoint.value()));
    }
    milters_.push_back(std::move(endpoints));
  }
  for (const auto& listener : config_.listeners) {
    asio::error_code ec;
    const auto address = asio::ip::make_address(listener.host, ec);
    if (ec) return make_error("listener " + listener.address + ": " + ec.message());
    const asio::ip::tcp::endpoint endpoint(address, listener.port);
    auto acceptor = std::make_unique<asio::ip::tcp::acceptor>(io_);
    acceptor->open(endpoint.protocol(), ec);
    if (!ec) acceptor->set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
    if (!ec && address.is_v6()) acceptor->set_option(asio::ip::v6_only(true), ec);
    // Replies go out as soon as they are written (PIPELINING batches them
    // already).  Set on the listener, Linux hands it to every accepted
    // socket: one setsockopt(2) per listener instead of one per connection.
    if (!ec) acceptor->set_option(asio::ip::tcp::no_delay(true), ec);
    if (!ec) acceptor->bind(endpoint, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return make_error("listener " + listener.address + ": " + ec.message());
    acceptors_.push_back(std::move(acceptor));
  }
  return {};
}

void Server::start() {
  for (std::size_t i = 0; i < acceptors_.size(); ++i)
    asio::co_spawn(io_, accept_loop(*acceptors_[i], config_.listeners[i]), asio::detached);
  signals_.async_wait([this](const asio::error_code& ec, int signal) {
    if (ec) return;
    log_line(std::string("server: signal ") + (signal == SIGTERM ? "TERM" : "INT") + ", shutting down");
    shutdown();
  });
  for (const auto& listener : config_.listeners)
    log_line("server: listening on " + listener.address + " tls=" + std::string(config::to_string(listener.tls)));
}

void Server::shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  asio::error_code ec;
  for (auto& acceptor : acceptors_) acceptor->close(ec);
  signals_.cancel(ec);
  if (on_shutdown_) on_shutdown_();
  const auto deadline = std::chrono::steady_clock::now() + config_.timeouts.shutdown;
  for (Connection* connection : connections_) connection->begin_shutdown(deadline);
}

const smtp::SessionSettings& Server::session_settings(const config::Listener& listener) {
  for (std::size_t i = 0; i < config_.listeners.size(); ++i)
    if (&config_.listeners[i] == &listener) return settings_[i];
  return settings_.front();
}

const std::vector<milter::MilterEndpoint>& Server::milters(const config::Listener& listener) {
  for (std::size_t i = 0; i < config_.listeners.size() && i < milters_.size(); ++i)
    if (&config_.listeners[i] == &listener) return milters_[i];
  static const std::vector<milter::MilterEndpoint> kNone;
  return kNone;
}

void Server::attach(Connection* connection) { connections_.insert(connection); }
void Server::detach(Connection* connection) {
  connections_.erase(connection);
  if (!relay_policy_.client_may_relay(connection->client_ip()))
    client_limits_.disconnected(connection->client_ip(), std::chrono::steady_clock::now());
}

bool Server::admit_message(std::string_view client_ip) {
  return client_limits_.message(std::string(client_ip), std::chrono::steady_clock::now());
}

asio::awaitable<Result<void>> Server::commit(queue::SpoolWriter& writer, const queue::Envelope& envelope,
                                             const std::string& content) {
  // The session stays suspended (and keeps envelope and content alive) until
  // the spool writer has committed the batch holding this message; the
  // writer thread then posts the result to the coroutine's own executor,
  // whose work guard keeps the event loop from ending meanwhile.
  co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(Result<void>)>(
      [this, &writer, &envelope, &content](auto handler) {
        auto work = asio::make_work_guard(asio::get_associated_executor(handler, io_.get_executor()));
        writer.submit(envelope, content,
                      [handler = std::move(handler), work = std::move(work)](Result<void> stored) mutable {
                        auto executor = work.get_executor();
                        asio::post(executor, [handler = std::move(handler), stored = std::move(stored),
                                              work = std::move(work)]() mutable {
                          std::move(handler)(std::move(stored));
                        });
                      });
      },
      asio::use_awaitable);
}

asio::awaitable<bool> Server::store(const queue::Envelope& envelope, const std::string& content) {
  const Result<void> result = co_await commit(writer_, envelope, content);
  if (!result) {
    log_line("spool: " + envelope.id + ": store failed: " + result.error());
    co_return false;
  }
  log_line("spool: " + envelope.id + ": queued from=<" + envelope.sender + "> nrcpt=" +
           std::to_string(envelope.recipients.size()) + " size=" + std::to_string(content.size()));
  on_stored_(envelope.id);
  co_return true;
}

asio::awaitable<bool> Server::quarantine(const queue::Envelope& envelope, const std::string& content) {
  if (quarantine_ == nullptr) co_return false;
  const Result<void> result = co_await commit(*quarantine_, envelope, content);
  if (!result) {
    log_line("quarantine: " + envelope.id + ": store failed: " + result.error());
    co_return false;
  }
  log_line("quarantine: " + envelope.id + ": held from=<" + envelope.sender + "> nrcpt=" +
           std::to_string(envelope.recipients.size()) + " size=" + std::to_string(content.size()));
  co_return true;
}

asio::awaitable<void> Server::refuse(asio::ip::tcp::socket socket, std::string reply) {
  asio::error_code ec;
  co_await asio::async_write(socket, asio::buffer(reply), asio::redirect_error(asio::use_awaitable, ec));
  socket.close(ec);
}

asio::awaitable<void> Server::accept_loop(asio::ip::tcp::acceptor& acceptor, const config::Listener& listener) {
  for (;;) {
    asio::error_code ec;
    asio::ip::tcp::endpoint peer;
    asio::ip::tcp::socket socket =
        co_await acceptor.async_accept(peer, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (shutting_down_ || ec == asio::error::operation_aborted) co_return;
      // EMFILE and friends: back off briefly rather than spin.
      log_line("server: accept on " + listener.address + ": " + ec.message());
      asio::steady_timer pause(io_, std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (connections_.size() >= config_.limits.max_connections) {
      asio::co_spawn(io_, refuse(std::move(socket), smtp::Session::too_many_connections(config_.hostname)),
                     asio::detached);
      continue;
    }
    const std::string ip = client_address(peer).to_string();
    if (!relay_policy_.client_may_relay(ip)) {
      const auto admission = client_limits_.connect(ip, std::chrono::steady_clock::now());
      if (admission != ClientLimits::Admission::ok) {
        const bool rate = admission == ClientLimits::Admission::connection_rate;
        log_line("server: refused " + ip + ": too many " + (rate ? "connections per minute" : "connections"));
        asio::co_spawn(io_, refuse(std::move(socket), smtp::Session::too_many_connections_from(config_.hostname, ip)),
                       asio::detached);
        continue;
      }
    }
    auto connection = std::make_shared<Connection>(std::move(socket), peer, *this, listener);
    asio::co_spawn(io_, connection->run(), asio::detached);
  }
}

}  // namespace mxgate::server
