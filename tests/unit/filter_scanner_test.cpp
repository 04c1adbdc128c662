// The scanner's Bayes snapshot: opened synchronously the first time, then
// reopened off the network thread when `mxgate learn` replaces the store,
// the old snapshot scoring until the new one is swapped in.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "filter/bayes.hpp"
#include "filter/scanner.hpp"
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

// A scanner whose classifier reads path (5 of each learned suffice) and
// looks at the file on every message.
Result<std::unique_ptr<Scanner>> scanner_for(const std::filesystem::path& path) {
  config::Filter policy;
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
