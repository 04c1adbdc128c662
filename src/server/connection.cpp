#include "server/connection.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "server/connection_host.hpp"
#include "filter/subject_tag.hpp"
#include "filter/verdict.hpp"
#include "sender_auth/authentication_results.hpp"
#include "tls/server_context.hpp"
#include "util/log.hpp"

namespace mxgate::server {
namespace {

// Large enough that a 1 MB message arrives in few reads; allocated per
// connection only while it lives.
constexpr std::size_t kReadBufferSize = 16 * 1024;
// Bound on the final write (421, 221) to a client that no longer reads.
constexpr std::chrono::seconds kFinalWriteTimeout{10};

}  // namespace

asio::ip::address client_address(const asio::ip::tcp::endpoint& peer) {
  const auto address = peer.address();
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  return address;
}

Connection::Connection(asio::ip::tcp::socket socket, const asio::ip::tcp::endpoint& peer, ConnectionHost& host,
                       const config::Listener& listener)
    : host_(host),
      listener_(listener),
      socket_(std::move(socket)),
      deadline_(socket_.get_executor()),
      peer_(peer.address().to_string() + ":" + std::to_string(peer.port())),
      peer_port_(peer.port()),
      client_ip_(client_address(peer).to_string()),
      session_(host.session_settings(listener), host.session_environment(), client_ip_),
      read_buffer_(new char[kReadBufferSize]) {
  host_.attach(this);
}

Connection::~Connection() { host_.detach(this); }

void Connection::arm(Clock::duration timeout) {
  deadline_.arm_at(std::min(Clock::now() + timeout, shutdown_deadline_));
}

void Connection::begin_shutdown(Clock::time_point deadline) {
  shutting_down_ = true;
  shutdown_deadline_ = session_.in_transaction() ? deadline : Clock::now();
  deadline_.arm_at(std::min(deadline_.at(), shutdown_deadline_));
}

asio::awaitable<void> Connection::watchdog() {
  auto self = shared_from_this();
  co_await deadline_.watch(socket_);
}

asio::awaitable<bool> Connection::write_all(std::string_view bytes, bool last) {
  if (tls_) {
    const std::error_code ec =
        co_await tls_->write_all(bytes, last ? tls::Stream::Then::close_notify : tls::Stream::Then::keep_open);
    co_return !ec;
  }
  asio::error_code ec;
  co_await asio::async_write(socket_, asio::buffer(bytes), asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec;
}

asio::awaitable<std::size_t> Connection::read_some() {
  if (tls_) {
    std::error_code ec;
    const std::size_t n = co_await tls_->read_some(read_buffer_.get(), kReadBufferSize, ec);
    co_return ec ? 0 : n;
  }
  asio::error_code ec;
  const std::size_t n =
      co_await socket_.async_read_some(asio::buffer(read_buffer_.get(), kReadBufferSize),
                                       asio::redirect_error(asio::use_awaitable, ec));
  co_return ec ? 0 : n;
}

asio::awaitable<bool> Connection::handshake() {
  tls_ = std::make_unique<tls::Stream>(socket_, host_.tls_context().native_handle(), tls::Stream::Role::server);
  arm(host_.timeouts().tls_handshake);
  const std::error_code ec = co_await tls_->handshake();
  if (ec) {
    tls_failure_ = deadline_.expired() ? "timeout" : ec.message();
    if (!tls_->failure().empty() && tls_->failure() != "unknown error") tls_failure_ += " (" + tls_->failure() + ")";
    log_line("tls: handshake failed: client=" + peer_ + ": " + tls_failure_);
    co_return false;
  }
  session_.tls_established(tls::describe(tls_->native_handle()));
  co_return true;
}

void Connection::start_mail_stage_checks() {
  const filter::Scanner* scanner = host_.scanner();
  const std::string* sender = session_.mail_from();
  if (scanner == nullptr || sender == nullptr || spf_transaction_ == session_.transactions_begun()) return;
  // A new transaction was accepted by the step just taken: its SPF check
  // runs while RCPT and the message come in.
  spf_transaction_ = session_.transactions_begun();
  mail_from_spf_ = scanner->start_mail_from_spf(socket_.get_executor(), client_ip_, session_.relay_client(),
                                                session_.helo(), *sender, peer_);
}

asio::awaitable<void> Connection::check_recipient() {
  const filter::Scanner* scanner = host_.scanner();
  const std::string* recipient = session_.recipient_to_check();
  if (scanner == nullptr || recipient == nullptr) {
    session_.recipient_checked(std::nullopt);
    co_return;
  }
  filter::ScanContext context;
  context.client_address = client_ip_;
  context.client_port = peer_port_;
  context.helo = session_.helo();
  context.sender = session_.mail_from() ? *session_.mail_from() : std::string();
  context.client_dnsbl = client_dnsbl_;
  if (spf_transaction_ == session_.transactions_begun()) context.mail_from_spf = mail_from_spf_;
  const std::string to = *recipient;  // the session keeps it until recipient_checked()
  const std::optional<smtp::Reply> refusal = co_await scanner->recipient_refusal(context, to, peer_);
  session_.recipient_checked(refusal);
}

asio::awaitable<void> Connection::finish_message() {
  const filter::Scanner* scanner = host_.scanner();
  if (scanner == nullptr) {
    const bool stored = co_await host_.store(session_.envelope(), session_.content());
    session_.stored(stored);
    co_return;
  }
  // The client waits for its reply meanwhile: the verdict decides whether
  // there is a 250 at all (no backscatter: refused mail is never bounced).
  filter::ScanContext context;
  context.client_address = session_.envelope().client_address;
  context.helo = session_.helo();
  context.sender = session_.envelope().sender;
  context.relay_client = session_.relay_client();
  context.client_port = peer_port_;
  context.recipients = session_.envelope().recipients;
  context.queue_id = session_.envelope().id;
  context.milters = &host_.milters(listener_);
  context.client_dnsbl = client_dnsbl_;
  if (spf_transaction_ == session_.transactions_begun()) context.mail_from_spf = mail_from_spf_;
  const filter::ScanOutcome outcome = co_await scanner->scan(session_.content(), context);
  const filter::Verdict& verdict = outcome.verdict;
  const auto& policy = scanner->policy();
  // RFC 8601 section 5: fields that claim our authserv-id came from outside.
  session_.erase_content(sender_auth::our_authentication_results(session_.content(), scanner->authserv_id()));
  if (!outcome.milter_log.empty())
    log_line("filter: " + session_.envelope().id + ": milters " + outcome.milter_log);
  if (!outcome.header_changes.empty())
    session_.replace_content(milter::apply_header_changes(session_.content(), outcome.header_changes));
  log_line("filter: " + session_.envelope().id + ": client=" + peer_ + " from=<" + session_.envelope().sender +
           "> " + filter::describe(verdict, policy));
  using config::FilterAction;
  switch (verdict.action) {
    case FilterAction::accept:
    case FilterAction::tag: {
      if (verdict.action == FilterAction::tag && !policy.subject_tag.empty())
        session_.replace_content(filter::tag_subject(session_.content(), policy.subject_tag));
      session_.add_header_fields(outcome.header_fields);
      const bool stored = co_await host_.store(session_.envelope(), session_.content());
      session_.stored(stored);
      break;
    }
    case FilterAction::quarantine: {
      // Accepted and kept, not delivered: the sender sees a normal 250 and
      // learns nothing about the verdict (RFC 5321 section 6.1 still holds:
      // the message is durably ours).
      session_.add_header_fields(outcome.header_fields);
      const bool held = co_await host_.quarantine(session_.envelope(), session_.content());
      session_.stored(held);
      break;
    }
    case FilterAction::reject:
      session_.refused(smtp::Reply{550, "5.7.1", verdict.reason});
      break;
    case FilterAction::tempfail:
      session_.refused(smtp::Reply{451, "4.7.1", verdict.reason});
      break;
  }
}

asio::awaitable<void> Connection::run() {
  auto self = shared_from_this();
  asio::co_spawn(socket_.get_executor(), watchdog(), asio::detached);
  const auto& timeouts = host_.timeouts();
  if (const filter::Scanner* scanner = host_.scanner())
    client_dnsbl_ = scanner->start_client_dnsbl(socket_.get_executor(), client_ip_, session_.relay_client(), peer_);

  bool open = true;
  if (listener_.tls == config::TlsMode::implicit) open = co_await handshake();
  if (open) {
    arm(timeouts.command);
    const std::string greeting = session_.greeting();
    open = co_await write_all(greeting);
  }
  while (open) {
    smtp::Step step = session_.advance();
    start_mail_stage_checks();
    if (!step.output.empty()) {
      arm(step.next == smtp::Next::close ? std::chrono::duration_cast<Clock::duration>(kFinalWriteTimeout)
                                         : timeouts.command);
      if (!co_await write_all(step.output, step.next == smtp::Next::close)) {
        session_.disconnected();
        break;
      }
    }
    switch (step.next) {
      case smtp::Next::read: {
        if (shutting_down_ && !session_.in_transaction()) {
          arm(kFinalWriteTimeout);
          const std::string goodbye = session_.shutting_down();
          co_await write_all(goodbye, true);
          open = false;
          break;
        }
        arm(session_.waiting_for() == smtp::Wait::data ? timeouts.data : timeouts.command);
        const std::size_t n = co_await read_some();
        if (n == 0) {
          if (deadline_.expired()) {
            deadline_.clear_expired();
            arm(kFinalWriteTimeout);
            // Named, not a temporary in the co_await: GCC 12 destroys
            // conditional temporaries across a suspension twice.
            std::string goodbye;
            if (shutting_down_) {
              goodbye = session_.shutting_down();
            } else {
              goodbye = session_.timed_out();
            }
            co_await write_all(goodbye, true);
          } else {
            session_.disconnected();
          }
          open = false;
          break;
        }
        session_.receive(std::string_view(read_buffer_.get(), n));
        break;
      }
      case smtp::Next::start_tls:
        open = co_await handshake();
        if (!open) session_.disconnected();
        break;
      case smtp::Next::store:
        co_await finish_message();
        break;
      case smtp::Next::check_recipient:
        co_await check_recipient();
        break;
      case smtp::Next::close:
        open = false;
        break;
    }
  }
  deadline_.stop();
  log_end();
  if (tls_) tls_->close_notify();
  asio::error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  socket_.close(ec);
}

void Connection::log_end() {
  std::string line = "session end: client=" + peer_;
  line += " helo=" + (session_.helo().empty() ? std::string("-") : session_.helo());
  if (const auto& tls = session_.tls()) {
    line += " tls=" + tls->version + "/" + tls->cipher;
  } else {
    line += " tls=cleartext";
  }
  line += " messages=" + std::to_string(session_.messages_accepted());
  std::string end = session_.end_reason();
  if (!tls_failure_.empty()) end = "tls handshake failed: " + tls_failure_;
  line += " end=" + (end.empty() ? std::string("unknown") : end);
  log_line(line);
}

}  // namespace mxgate::server
