#include "filter/scanner.hpp"

#include <sys/stat.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "filter/attachment_policy.hpp"
#include "filter/helo_check.hpp"
#include "filter/impersonation.hpp"
#include "filter/mime_parser.hpp"
#include "filter/phishing.hpp"
#include "filter/reputation.hpp"
#include "filter/spam_rules.hpp"
#include "util/log.hpp"
#include "util/unique_fd.hpp"

namespace mxgate::filter {

namespace {

// The text of a milter's "5xx x.y.z text" for our reply (whose codes are
// fixed: 550 5.7.1 / 451 4.7.1), controls replaced; nothing when it is not
// a reply of the wanted class.
std::optional<std::string> milter_reply_text(const std::string& reply, char wanted_class) {
  if (reply.size() < 5 || reply[0] != wanted_class || reply[3] != ' ') return std::nullopt;
  std::string_view rest(reply);
  rest.remove_prefix(4);
  const auto space = rest.find(' ');
  if (space != std::string_view::npos && rest.size() > 1 && rest[0] == wanted_class && rest[1] == '.')
    rest.remove_prefix(space + 1);
  std::string text;
  for (const char c : rest) text += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? ' ' : c;
  if (text.empty()) return std::nullopt;
  return text;
}

// [filter] rules (or the built-in set), rule_scores applied, compiled.
Result<std::unique_ptr<RuleEngine>> load_rules(const config::Filter& policy) {
  std::string text;
  std::string source = "built-in rules";
  if (!policy.rules.empty()) {
    source = policy.rules.string();
    if (const int err = read_file(policy.rules, text); err != 0)
      return make_error("filter.rules: " + source + ": " + std::strerror(err));
  }
  auto rules = parse_rules(policy.rules.empty() ? default_rules_text() : std::string_view(text), source);
  if (!rules) return make_error("filter.rules: " + rules.error());
  if (auto applied = apply_rule_scores(rules.value(), policy.rule_scores); !applied) return make_error(applied.error());
  auto engine = RuleEngine::compile(std::move(rules.value()));
  if (!engine) return make_error("filter.rules: " + source + ": " + engine.error());
  return engine;
}

}  // namespace

void fold_milters(Verdict& verdict, const MilterOutcome& milters) {
  if (milters.action <= verdict.action) return;
  verdict.action = milters.action;
  verdict.reason.clear();
  if (milters.action == config::FilterAction::reject) {
    verdict.reason = milter_reply_text(milters.reply, '5').value_or("Message refused by content policy");
  } else if (milters.action == config::FilterAction::tempfail) {
    verdict.reason = milter_reply_text(milters.reply, '4').value_or("Message deferred by content policy");
  }
  if (!verdict.rules.empty()) verdict.rules += ',';
  verdict.rules += "MILTER(" + milters.decided_by + ")=" + std::string(config::to_string(milters.action));
}

Result<std::unique_ptr<Scanner>> Scanner::create(const config::Filter& policy, std::string authserv_id) {
  auto psl = sender_auth::PublicSuffixList::load();
  if (!psl) return make_error("filter: " + psl.error());
  std::unique_ptr<Scanner> scanner(new Scanner(policy, std::move(authserv_id), std::move(psl.value())));
  auto rules = load_rules(policy);
  if (!rules) return make_error(rules.error());
  scanner->rules_ = std::move(rules.value());
  if (!policy.clamd.empty()) {
    auto endpoint = parse_clamd_endpoint(policy.clamd);
    if (!endpoint) return make_error("filter.clamd: " + endpoint.error());
    scanner->clamd_ = std::move(endpoint.value());
  }
  return scanner;
}

std::string Scanner::describe() const {
  std::string line = "filter: enabled, ";
  line += clamd_ ? "antivirus clamd " + to_string(*clamd_) : "no antivirus (filter.clamd unset)";
  line += resolver_ != nullptr ? ", SPF/DKIM/DMARC on" : ", SPF/DKIM/DMARC off (no resolver)";
  line += ", " + std::to_string(rules_->rules().size()) + " spam rules";
  line += policy_.rules.empty() ? " (built-in)" : " from " + policy_.rules.string();
  if (policy_.reject_dnsbl_clients) line += ", DNSBL-listed clients refused at RCPT";
  if (policy_.reject_spf_fail) line += ", SPF fail refused at RCPT";
  if (policy_.reject_invalid_helo) line += ", invalid HELO refused at RCPT";
  line += ", protected domains " + std::to_string(policy_.protected_domains.size()) + ", protected names " +
          std::to_string(policy_.protected_names.size());
  return line;
}

asio::awaitable<std::string> Scanner::check_clamd() const {
  if (!clamd_) co_return std::string();
  const auto pong = co_await clamd_ping(*clamd_, std::chrono::seconds(5));
  co_return pong ? std::string() : pong.error();
}

ParsedMessage Scanner::parse(std::string_view content) const {
  MimeLimits limits;
  limits.max_depth = policy_.max_mime_depth;
  limits.max_parts = policy_.max_mime_parts;
  limits.max_decoded_bytes = policy_.max_decoded_size;
  return parse_mime(content, limits);
}

void Scanner::refresh_bayes() const {
  if (bayes_loading_.valid()) {
    if (bayes_loading_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return;
    adopt_bayes(bayes_loading_.get());
  }
  const auto now = std::chrono::steady_clock::now();
  if (bayes_checked_ != std::chrono::steady_clock::time_point{} && now - bayes_checked_ < bayes_recheck_) return;
  bayes_checked_ = now;
  struct stat st {};
  if (::stat(policy_.bayes_db.c_str(), &st) != 0) return;  // not trained yet
  const auto inode = static_cast<std::uint64_t>(st.st_ino);
  // SQLite's data_version sees commits to the file it has open; a file
  // replaced (deleted and learned afresh) shows as a new inode.
  if (bayes_ && !bayes_->changed() && inode == bayes_inode_) return;
  if (!bayes_) {
    adopt_bayes(BayesLoad{open_bayes(policy_.bayes_db, false), inode});
    return;
  }
  bayes_loading_ = std::async(std::launch::async, [path = policy_.bayes_db, inode] {
    return BayesLoad{open_bayes(path, false), inode};
  });
}

void Scanner::adopt_bayes(BayesLoad load) const {
  if (!load.store) {
    // Keep the old snapshot, if any; say why once.
    if (load.store.error() != bayes_problem_) log_line("filter: " + load.store.error());
    bayes_problem_ = load.store.error();
    return;
  }
  bayes_problem_.clear();
  bayes_ = std::move(load.store.value());
  bayes_inode_ = load.inode;
  log_line("filter: Bayes store " + policy_.bayes_db.string() + ": " + std::to_string(bayes_->spam_messages()) +
           " spam, " + std::to_string(bayes_->ham_messages()) + " ham, " + std::to_string(bayes_->token_count()) +
           " tokens");
}

Findings Scanner::local_checks(std::string_view content, const ParsedMessage& message) const {
  Findings findings = check_spam_rules(content, message);
  refresh_bayes();
  Findings bayes;
  if (bayes_) bayes = check_bayes(content, message, *bayes_, BayesOptions{policy_.bayes_min_spam, policy_.bayes_min_ham});
  // Silent classifier (no store yet, or too little learned): the rules'
  // scores for deciding without it.
  findings.merge(rules_->check(content, message, !bayes.findings.empty()));
  findings.merge(std::move(bayes));
  const ContentPolicy content_policy{policy_.protected_domains, policy_.protected_names};
  findings.merge(check_phishing(message, content_policy));
  findings.merge(check_impersonation(message, content_policy));
  AttachmentLimits limits;
  limits.max_archive_depth = policy_.max_archive_depth;
  limits.max_archive_entries = policy_.max_archive_entries;
  limits.max_expanded_bytes = policy_.max_archive_expanded;
  findings.merge(check_attachments(message, limits));
  // What could not be parsed cannot be vouched for: a message past a MIME
  // limit counts as a carrier, like an archive too deep to open.
  if (!message.limit_exceeded.empty())
    findings.add(Category::malware, "MIME_LIMIT", policy_.malware_threshold, message.limit_exceeded);
  return findings;
}

asio::awaitable<Findings> Scanner::scan_parts(const ParsedMessage& message) const {
  Findings findings;
  if (!clamd_) co_return findings;
  // Each decoded leaf part separately: clamd then sees what the recipient's
  // mail client will, whatever its own MIME parser makes of the message.
  // The time budget is enforced around the whole scan (examine()).
  ClamdScanOptions options;
  options.max_stream = policy_.clamd_max_stream;
  options.timeout = policy_.time_budget;
  for (const Part& part : message.parts) {
    if (part.data.empty()) continue;
    const auto result = co_await clamd_scan(*clamd_, part.data, options);
    if (!result) {
      findings.fail("clamd", result.error());
      break;
    }
    if (result->infected) {
      findings.add(
          Category::malware, "CLAMAV", policy_.malware_threshold,
          (part.filename.empty() ? std::string("(unnamed)") : part.filename) + ": " + result->signature);
      break;
    }
  }
  co_return findings;
}

asio::awaitable<MilterOutcome> Scanner::run_milters(std::string_view content, const ScanContext& context,
                                                     Findings& findings) const {
  MilterOutcome outcome;
  if (context.milters == nullptr || context.milters->empty()) co_return outcome;
  milter::MilterMessage message;
  message.client_address = context.client_address;
  message.client_port = context.client_port;
  message.client_name = "[" + context.client_address + "]";
  message.helo = context.helo;
  message.sender = context.sender;
  message.recipients = context.recipients;
  message.content = std::string(content);
  message.queue_id = context.queue_id;
  message.our_hostname = authserv_id_;
  using Action = milter::MilterResult::Action;
  for (const milter::MilterEndpoint& endpoint : *context.milters) {
    auto run = milter::run_milter(endpoint, message, policy_.time_budget);
    const Result<milter::MilterResult> result = co_await std::move(run);
    const std::string name = milter::to_string(endpoint);
    if (!result) {
      findings.fail("milter", result.error());
      break;
    }
    config::FilterAction action = config::FilterAction::accept;
    switch (result->action) {
      case Action::accept: break;
      case Action::reject: action = config::FilterAction::reject; break;
      case Action::tempfail: action = config::FilterAction::tempfail; break;
      case Action::discard:
      case Action::quarantine: action = config::FilterAction::quarantine; break;
    }
    std::string note = name + "=" + std::string(config::to_string(action));
    if (!result->reply.empty()) note += " (" + result->reply + ")";
    if (!result->quarantine_reason.empty()) note += " (quarantine: " + result->quarantine_reason + ")";
    for (const std::string& ignored : result->notes) note += " [" + ignored + "]";
    outcome.notes.push_back(std::move(note));
    for (const auto& change : result->header_changes) outcome.header_changes.push_back(change);
    if (action > outcome.action) {
      outcome.action = action;
      outcome.reply = result->reply;
      outcome.decided_by = name;
    }
    // A refusal or a hold ends the chain, as in Postfix.
    if (action != config::FilterAction::accept) break;
  }
  co_return outcome;
}

std::shared_ptr<PendingResult<Findings>> Scanner::start_client_dnsbl(const asio::any_io_executor& executor,
                                                                     const std::string& client_address,
                                                                     bool relay_client, const std::string& peer) const {
  if (resolver_ == nullptr || policy_.dnsbl.empty() || relay_client) return nullptr;
  auto checks = std::make_shared<PendingResult<Findings>>(executor);
  ReputationPolicy lists{policy_.dnsbl, {}, policy_.dnsbl_score, policy_.uribl_score};
  // The coroutine holds the state; the resolver and this scanner outlive
  // every connection (main.cpp).
  asio::co_spawn(
      executor,
      [this, checks, client_address, peer, lists]() -> asio::awaitable<void> {
        Findings found = co_await check_client_dnsbl(*resolver_, client_address, false, lists);
        for (const Finding& f : found.findings) log_line("filter: connect: client=" + peer + ": " + f.detail);
        checks->complete(std::move(found));
      },
      asio::detached);
  return checks;
}

std::shared_ptr<PendingResult<sender_auth::SpfVerdict>> Scanner::start_mail_from_spf(
    const asio::any_io_executor& executor, const std::string& client_address, bool relay_client,
    const std::string& helo, const std::string& sender, const std::string& peer) const {
  if (resolver_ == nullptr || relay_client) return nullptr;
  asio::error_code ec;
  const auto client = asio::ip::make_address(client_address, ec);
  if (ec) return nullptr;
  auto spf = std::make_shared<PendingResult<sender_auth::SpfVerdict>>(executor);
  asio::co_spawn(
      executor,
      [this, spf, client, helo, sender, peer]() -> asio::awaitable<void> {
        auto check = sender_auth::check_spf_mail_from(*resolver_, client, helo, sender);
        sender_auth::SpfVerdict verdict = co_await std::move(check);
        log_line("filter: mail: client=" + peer + " from=<" + sender + ">: spf=" +
                 std::string(sender_auth::to_string(verdict.result)));
        spf->complete(std::move(verdict));
      },
      asio::detached);
  return spf;
}

asio::awaitable<std::optional<smtp::Reply>> Scanner::recipient_refusal(const ScanContext& context,
                                                                       std::string_view recipient,
                                                                       const std::string& peer) const {
  using namespace asio::experimental::awaitable_operators;
  auto decide = [&]() -> asio::awaitable<std::optional<smtp::Reply>> {
    if (policy_.reject_invalid_helo && !context.helo.empty()) {
      const std::string problem = helo_problem(context.helo, context.client_address, authserv_id_);
      if (!problem.empty())
        co_return smtp::Reply{550, "5.7.1",
                              "<" + context.helo.substr(0, 100) + ">: Helo command rejected: " + problem};
    }
    if (policy_.reject_dnsbl_clients && context.client_dnsbl) {
      const Findings found = co_await context.client_dnsbl->get();
      for (const Finding& f : found.findings)
        if (f.rule == "RCVD_IN_DNSBL") co_return smtp::Reply{550, "5.7.1", "Client host blocked: " + f.detail};
    }
    if (policy_.reject_spf_fail && context.mail_from_spf) {
      const sender_auth::SpfVerdict spf = co_await context.mail_from_spf->get();
      if (spf.result == sender_auth::SpfResult::fail) {
        std::string text = "SPF validation failed: " + spf.domain + " does not designate [" +
                           context.client_address + "] as a permitted sender";
        // RFC 7208 section 6.2: the domain's own explanation goes to the
        // sender (printable ASCII already; bounded to keep the reply line
        // under RFC 5321's 512 octets).
        if (!spf.explanation.empty()) text += ": " + spf.explanation.substr(0, 200);
        co_return smtp::Reply{550, "5.7.23", std::move(text)};
      }
    }
    co_return std::nullopt;
  };
  asio::steady_timer budget(co_await asio::this_coro::executor, policy_.time_budget);
  auto result = co_await (decide() || budget.async_wait(asio::use_awaitable));
  if (result.index() != 0) co_return std::nullopt;
  std::optional<smtp::Reply> refusal = std::move(std::get<0>(result));
  if (refusal)
    log_line("filter: rcpt: client=" + peer + " from=<" + context.sender + "> to=<" + std::string(recipient) +
             ">: refused: " + std::to_string(refusal->code) + " " + std::string(refusal->enhanced) + " " +
             refusal->text);
  co_return refusal;
}

asio::awaitable<Examination> Scanner::examine(std::string_view content, const ScanContext& context) const {
  using namespace asio::experimental::awaitable_operators;
  Examination out;
  const ParsedMessage message = parse(content);
  out.findings = local_checks(content, message);

  auto remote =
      [&]() -> asio::awaitable<std::pair<Findings, std::optional<sender_auth::AuthenticationResults>>> {
    auto sender = [&]() -> asio::awaitable<SenderCheck> {
      if (resolver_ == nullptr) co_return SenderCheck{};
      co_return co_await check_sender(*resolver_, psl_, content, message, context, policy_.protected_domains);
    };
    auto reputation = [&]() -> asio::awaitable<Findings> {
      if (resolver_ == nullptr || (policy_.dnsbl.empty() && policy_.uribl.empty())) co_return Findings{};
      ReputationPolicy lists{policy_.dnsbl, policy_.uribl, policy_.dnsbl_score, policy_.uribl_score};
      Findings found;
      if (context.client_dnsbl) {
        found = co_await context.client_dnsbl->get();
      } else {
        found = co_await check_client_dnsbl(*resolver_, context.client_address, context.relay_client, lists);
      }
      found.merge(co_await check_uribl(*resolver_, psl_, message, context.relay_client, lists));
      co_return found;
    };
    auto [antivirus, authentication, listed] = co_await (scan_parts(message) && sender() && reputation());
    antivirus.merge(std::move(authentication.findings));
    antivirus.merge(std::move(listed));
    co_return std::make_pair(std::move(antivirus), std::move(authentication.results));
  };
  asio::steady_timer budget(co_await asio::this_coro::executor, policy_.time_budget);
  auto result = co_await (remote() || budget.async_wait(asio::use_awaitable));
  if (result.index() == 0) {
    auto& [findings, authentication] = std::get<0>(result);
    out.findings.merge(std::move(findings));
    out.authentication = std::move(authentication);
  } else {
    out.findings.fail("filter", "time budget of " + std::to_string(policy_.time_budget.count()) + " s spent");
  }
  // The milters come last, as in Postfix after its own checks; each has the
  // whole budget (their daemons keep their own timeouts too).
  out.milters = co_await run_milters(content, context, out.findings);
  co_return out;
}

asio::awaitable<ScanOutcome> Scanner::scan(std::string_view content, const ScanContext& context) const {
  Examination examination = co_await examine(content, context);
  ScanOutcome outcome;
  outcome.verdict = decide(examination.findings, policy_);
  fold_milters(outcome.verdict, examination.milters);
  outcome.header_changes = std::move(examination.milters.header_changes);
  for (const std::string& note : examination.milters.notes)
    outcome.milter_log += (outcome.milter_log.empty() ? "" : " ") + note;
  if (examination.authentication)
    outcome.header_fields =
        sender_auth::authentication_results_field(authserv_id_, *examination.authentication);
  outcome.header_fields += verdict_headers(outcome.verdict, policy_);
  co_return outcome;
}

}  // namespace mxgate::filter
