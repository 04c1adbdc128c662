// filter::decide: scores summed per category, thresholds, the most severe
// action wins, failures follow on_failure, replies carry no rule names.
#include "filter/verdict.hpp"

#include <gtest/gtest.h>

namespace mxgate::filter {
namespace {

using config::FilterAction;

config::Filter policy() {
  config::Filter p;  // the defaults: spam quarantine, phishing/malware reject, impersonation quarantine
  return p;
}

TEST(FilterVerdictTest, NothingFoundIsAccepted) {
  const Verdict v = decide(Findings{}, policy());
  EXPECT_EQ(v.action, FilterAction::accept);
  EXPECT_TRUE(v.reason.empty());
  EXPECT_FALSE(v.failed);
}

TEST(FilterVerdictTest, SpamScoresAddUpToTheThreshold) {
  Findings f;
  f.add(Category::spam, "A", 2.5);
  f.add(Category::spam, "B", 2.4);
  EXPECT_EQ(decide(f, policy()).action, FilterAction::accept);  // 4.9 < 5.0
  f.add(Category::spam, "C", 0.1);
  const Verdict v = decide(f, policy());  // exactly 5.0 reaches it
  EXPECT_EQ(v.action, FilterAction::quarantine);
  EXPECT_TRUE(v.is(Category::spam));
  EXPECT_DOUBLE_EQ(v.score(Category::spam), 5.0);
  EXPECT_EQ(v.rules, "A=2.5,B=2.4,C=0.1");
}

TEST(FilterVerdictTest, WeakSignsOfOtherCategoriesDoNotTriggerAlone) {
  Findings f;
  f.add(Category::phishing, "URL_SHORTENER", 0.3);
  f.add(Category::phishing, "IP_URL", 0.5);
  EXPECT_EQ(decide(f, policy()).action, FilterAction::accept);
  f.add(Category::phishing, "PUNYCODE_URL", 0.5);
  EXPECT_EQ(decide(f, policy()).action, FilterAction::reject);
}

TEST(FilterVerdictTest, TheMostSevereActionWinsAndNamesTheReply) {
  Findings f;
  f.add(Category::spam, "GTUBE", 1000);
  f.add(Category::malware, "CLAMAV", 1, "x.exe: Win.Trojan");
  const Verdict v = decide(f, policy());
  EXPECT_EQ(v.action, FilterAction::reject);
  EXPECT_EQ(v.reason, "Message refused as malware or a blocked attachment type");
  EXPECT_EQ(v.reason.find("CLAMAV"), std::string::npos);
  EXPECT_EQ(v.reason.find("Trojan"), std::string::npos);
}

TEST(FilterVerdictTest, ConfiguredActionsAreUsed) {
  config::Filter p = policy();
  p.actions.spam = FilterAction::tag;
  Findings f;
  f.add(Category::spam, "GTUBE", 1000);
  EXPECT_EQ(decide(f, p).action, FilterAction::tag);
  p.actions.spam = FilterAction::tempfail;
  const Verdict v = decide(f, p);
  EXPECT_EQ(v.action, FilterAction::tempfail);
  EXPECT_EQ(v.reason, "Message deferred as possible spam");
  p.actions.spam = FilterAction::accept;
  EXPECT_EQ(decide(f, p).action, FilterAction::accept);
}

TEST(FilterVerdictTest, AFailedCheckIsNeverACleanPass) {
  Findings f;
  f.fail("clamd", "connect: No such file or directory");
  Verdict v = decide(f, policy());
  EXPECT_EQ(v.action, FilterAction::tempfail);
  EXPECT_TRUE(v.failed);
  EXPECT_EQ(v.reason, "Message could not be scanned; try again later");
  // A definite verdict from another check outranks the failure...
  f.add(Category::phishing, "LINK_TEXT_MISMATCH", 1);
  EXPECT_EQ(decide(f, policy()).action, FilterAction::reject);
  // ...and a quarantine is final and safe, so it does too.
  Findings g;
  g.fail("clamd", "timeout");
  g.add(Category::impersonation, "PROTECTED_NAME_EXTERNAL", 1);
  EXPECT_EQ(decide(g, policy()).action, FilterAction::quarantine);
  // An operator may choose otherwise.
  config::Filter p = policy();
  p.on_failure = FilterAction::reject;
  EXPECT_EQ(decide(g, p).action, FilterAction::reject);
  EXPECT_EQ(decide(g, p).reason, "Message refused by content policy");
}

TEST(FilterVerdictTest, HeadersAreWellFormedAndBounded) {
  Findings f;
  f.add(Category::spam, "CTL\r\nInjected: yes", 0.1);
  for (int i = 0; i < 200; ++i) f.add(Category::spam, "RULE_WITH_A_LONG_NAME_" + std::to_string(i), 0.1);
  const Verdict v = decide(f, policy());
  const std::string headers = verdict_headers(v, policy());
  // Every line ends in CRLF, is shorter than RFC 5322's 998, and a line
  // that does not start a field is a continuation.
  std::size_t pos = 0;
  while (pos < headers.size()) {
    const auto eol = headers.find("\r\n", pos);
    ASSERT_NE(eol, std::string::npos);
    const std::string line = headers.substr(pos, eol - pos);
    EXPECT_LT(line.size(), 998u);
    EXPECT_EQ(line.find('\r'), std::string::npos);
    EXPECT_EQ(line.find('\n'), std::string::npos);
    EXPECT_TRUE(line[0] == '\t' || line.rfind("X-mxgate-Verdict: ", 0) == 0 || line.rfind("X-Spam-", 0) == 0)
        << line;
    pos = eol + 2;
  }
  EXPECT_NE(headers.find("X-Spam-Flag: YES\r\n"), std::string::npos);
  EXPECT_NE(headers.find("X-Spam-Status: Yes, score=20.1 required=5.0\r\n"), std::string::npos);
  EXPECT_NE(headers.find("CTL??Injected: yes"), std::string::npos);
  EXPECT_NE(headers.find(",..."), std::string::npos);
}

TEST(FilterVerdictTest, DescribeListsEveryCategory) {
  Findings f;
  f.add(Category::malware, "EXECUTABLE_ATTACHMENT", 1);
  f.fail("clamd", "timeout");
  const std::string line = describe(decide(f, policy()), policy());
  EXPECT_EQ(line,
            "action=reject spam=0.0/5.0 phishing=0.0/1.0 malware=1.0/1.0 impersonation=0.0/1.0 "
            "rules=EXECUTABLE_ATTACHMENT=1.0 failed=\"clamd: timeout\"");
}

}  // namespace
}  // namespace mxgate::filter
