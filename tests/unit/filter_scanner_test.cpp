// The scanner's Bayes snapshot: opened synchronously the first time, then
// reopened off the network thread when `mxgate learn` replaces the store,
// the old snapshot scoring until the new one is swapped in.  And the RCPT
// stage's refusals from the connect- and MAIL-stage results.
#include <gtest/gtest.h>

#include <asio/io_context.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "filter/bayes.hpp"
#include "filter/scanner.hpp"
#include "run_coroutine.hpp"
#include "temp_dir.hpp"

namespace mxgate::filter {
namespace {

using test_support::TempDir;

std::string mail(const std::string& subject, const std::string& body) {
  return "From: a@example.test\r\nTo: b@example.test\r\nSubject: " + subject + "\r\n\r\n" + body + "\r\n";
}

// Learns `spam_words` messages as spam and `ham_words` ones as ham into a
// fresh store at path (any old one removed first).
void learn_store(const std::filesystem::path& path, const std::string& spam_words, const std::string& ham_words) {
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path.string() + suffix);
  auto store = open_bayes(path, true);
  ASSERT_TRUE(store) << store.error();
  std::vector<std::string> spam, ham;
  for (int i = 0; i < 5; ++i) {
    spam.push_back(mail("offer " + std::to_string(i), spam_words + " number" + std::to_string(i)));
    ham.push_back(mail("notes " + std::to_string(i), ham_words + " number" + std::to_string(i)));
  }
  ASSERT_TRUE(learn_contents(**store, true, {spam.begin(), spam.end()}, MimeLimits{}));
  ASSERT_TRUE(learn_contents(**store, false, {ham.begin(), ham.end()}, MimeLimits{}));
}

// A rules file without rules, beside path: the tests here never read the
// spam rules, and compiling the built-in ones costs seconds under the
// sanitizers.
std::filesystem::path no_rules(const std::filesystem::path& beside) {
  const auto file = beside.parent_path() / "no-rules.toml";
  std::ofstream(file) << "# no rules\n";
  return file;
}

// A scanner whose classifier reads path (5 of each learned suffice) and
// looks at the file on every message.
Result<std::unique_ptr<Scanner>> scanner_for(const std::filesystem::path& path) {
  config::Filter policy;
  policy.rules = no_rules(path);
  policy.bayes_db = path;
  policy.bayes_min_spam = 5;
  policy.bayes_min_ham = 5;
  auto scanner = Scanner::create(policy, "mx.example.test");
  if (scanner) (*scanner)->set_bayes_recheck(std::chrono::milliseconds(0));
  return scanner;
}

std::string bayes_rule(const Scanner& scanner, const std::string& content) {
  for (const auto& f : scanner.local_checks(content, scanner.parse(content)).findings) {
    if (f.rule.rfind("BAYES_", 0) == 0) return f.rule;
  }
  return "";
}

TEST(ScannerBayes, FirstOpenIsImmediateAndAReplacedStoreIsSwappedInOffThread) {
  TempDir dir;
  const auto path = dir.path() / "bayes.sqlite";
  const std::string casino = "casino jackpot lottery winner pills discount";
  const std::string agenda = "agenda meeting budget review minutes deadline";
  learn_store(path, casino, agenda);

  auto scanner = scanner_for(path);
  ASSERT_TRUE(scanner) << scanner.error();
  const std::string probe = mail("hello", casino);
  // The store existed before the first message: that message is scored with it.
  EXPECT_EQ(bayes_rule(**scanner, probe).substr(0, 8), "BAYES_99");

  // The operator relearns from scratch with the classes the other way round.
  learn_store(path, agenda, casino);
  // The check that notices starts the reopen and still scores with the old snapshot.
  EXPECT_EQ(bayes_rule(**scanner, probe).substr(0, 8), "BAYES_99");
  std::string rule;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    rule = bayes_rule(**scanner, probe);
    if (rule != "BAYES_99" && rule != "BAYES_999") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(rule == "BAYES_00" || rule == "BAYES_05") << rule;
}

TEST(ScannerBayes, NoStoreNoFindingAndABrokenReplacementKeepsTheOldSnapshot) {
  TempDir dir;
  const auto path = dir.path() / "bayes.sqlite";
  auto scanner = scanner_for(path);
  ASSERT_TRUE(scanner) << scanner.error();
  const std::string casino = "casino jackpot lottery winner pills discount";
  const std::string probe = mail("hello", casino);
  EXPECT_EQ(bayes_rule(**scanner, probe), "");  // not trained yet

  learn_store(path, casino, "agenda meeting budget review minutes deadline");
  EXPECT_EQ(bayes_rule(**scanner, probe).substr(0, 8), "BAYES_99");

  // Replaced by a file that is no store: the old snapshot goes on scoring.
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path.string() + suffix);
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("not a database", f);
    std::fclose(f);
  }
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(bayes_rule(**scanner, probe).substr(0, 8), "BAYES_99");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace
}  // namespace mxgate::filter

namespace mxgate::filter {
namespace {

// The RCPT stage (Scanner::recipient_refusal) on results the test
// completes itself: a listing or an SPF fail refuses only when its
// reject_ key is on, and a result not in within the budget refuses nothing.
struct RcptStage {
  explicit RcptStage(bool reject_dnsbl, bool reject_spf, bool reject_helo = false) {
    policy.reject_dnsbl_clients = reject_dnsbl;
    policy.reject_spf_fail = reject_spf;
    policy.reject_invalid_helo = reject_helo;
    policy.time_budget = std::chrono::seconds(1);
    policy.rules = no_rules(dir.path() / "x");
    scanner = std::move(Scanner::create(policy, "mx.example.test").value());
    context.client_address = "192.0.2.7";
    context.sender = "a@example.org";
    context.client_dnsbl = std::make_shared<PendingResult<Findings>>(io.get_executor());
    context.mail_from_spf = std::make_shared<PendingResult<sender_auth::SpfVerdict>>(io.get_executor());
  }
  std::optional<smtp::Reply> refusal() {
    auto out = test_support::run(io, scanner->recipient_refusal(context, "b@example.test", "192.0.2.7:1234"));
    return out ? *out : std::optional<smtp::Reply>();
  }
  void listed() {
    Findings f;
    f.add(Category::spam, "RCVD_IN_DNSBL", 6.0, "192.0.2.7 listed in bl.example (127.0.0.2)");
    context.client_dnsbl->complete(std::move(f));
  }
  void spf(sender_auth::SpfResult result) {
    sender_auth::SpfVerdict v;
    v.result = result;
    v.domain = "example.org";
    context.mail_from_spf->complete(std::move(v));
  }
  TempDir dir;
  asio::io_context io;
  config::Filter policy;
  std::unique_ptr<Scanner> scanner;
  ScanContext context;
};

TEST(ScannerRecipientStage, AListedClientIsRefusedOnlyWhenAskedFor) {
  RcptStage on(true, false);
  EXPECT_TRUE(on.scanner->checks_recipients());
  on.listed();
  on.spf(sender_auth::SpfResult::fail);  // not asked for
  const auto refusal = on.refusal();
  ASSERT_TRUE(refusal);
  EXPECT_EQ(refusal->code, 550);
  EXPECT_EQ(refusal->enhanced, "5.7.1");
  EXPECT_EQ(refusal->text, "Client host blocked: 192.0.2.7 listed in bl.example (127.0.0.2)");

  RcptStage off(false, false);
  EXPECT_FALSE(off.scanner->checks_recipients());
  off.listed();
  EXPECT_FALSE(off.refusal());
  // Not listed (a lookup that found nothing, or failed: no finding).
  RcptStage clean(true, false);
  clean.context.client_dnsbl->complete(Findings{});
  EXPECT_FALSE(clean.refusal());
}

TEST(ScannerRecipientStage, OnlyAnSpfFailIsRefused) {
  for (const auto result : {sender_auth::SpfResult::none, sender_auth::SpfResult::neutral,
                            sender_auth::SpfResult::pass, sender_auth::SpfResult::softfail,
                            sender_auth::SpfResult::temperror, sender_auth::SpfResult::permerror}) {
    RcptStage stage(false, true);
    stage.spf(result);
    EXPECT_FALSE(stage.refusal()) << sender_auth::to_string(result);
  }
  RcptStage stage(false, true);
  stage.context.client_dnsbl.reset();  // no DNSBL configured
  stage.spf(sender_auth::SpfResult::fail);
  const auto refusal = stage.refusal();
  ASSERT_TRUE(refusal);
  EXPECT_EQ(refusal->code, 550);
  EXPECT_EQ(refusal->enhanced, "5.7.23");
  EXPECT_EQ(refusal->text,
            "SPF validation failed: example.org does not designate [192.0.2.7] as a permitted sender");
}

TEST(ScannerRecipientStage, AnInvalidHeloIsRefusedOnlyWhenAskedFor) {
  RcptStage on(false, false, true);
  EXPECT_TRUE(on.scanner->checks_recipients());
  on.context.helo = "localhost";
  auto refusal = on.refusal();
  ASSERT_TRUE(refusal);
  EXPECT_EQ(refusal->code, 550);
  EXPECT_EQ(refusal->enhanced, "5.7.1");
  EXPECT_EQ(refusal->text, "<localhost>: Helo command rejected: need fully-qualified hostname");
  // Our own name (the scanner's authserv-id is our hostname).
  on.context.helo = "MX.example.test";
  refusal = on.refusal();
  ASSERT_TRUE(refusal);
  EXPECT_EQ(refusal->text, "<MX.example.test>: Helo command rejected: that is our own hostname");
  on.context.helo = "[192.0.2.7]";
  EXPECT_FALSE(on.refusal());
  on.context.helo = "mail.example.org";
  EXPECT_FALSE(on.refusal());
  // Off: nothing is judged.
  RcptStage off(true, true);
  off.context.helo = "localhost";
  off.context.client_dnsbl->complete(Findings{});
  off.spf(sender_auth::SpfResult::pass);
  EXPECT_FALSE(off.refusal());
}

TEST(ScannerRecipientStage, AResultNotInWithinTheBudgetRefusesNothing) {
  RcptStage stage(true, true);  // neither result is ever completed
  const auto started = std::chrono::steady_clock::now();
  EXPECT_FALSE(stage.refusal());
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(900));
}

}  // namespace
}  // namespace mxgate::filter
