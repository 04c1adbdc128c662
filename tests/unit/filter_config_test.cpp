// [filter] and [filter.actions]: the keys the acceptance tests use, their
// defaults, and one-line errors naming the key.
#include <gtest/gtest.h>

#include <string>

#include "config/config.hpp"

namespace mxgate::config {
namespace {

std::string document(const std::string& top, const std::string& tables) {
  return "hostname = \"mx.example.test\"\n"
         "spool = \"/var/spool/mxgate\"\n" +
         top +
         "\n[[listener]]\n"
         "address = \"127.0.0.1:2525\"\n"
         "tls = \"none\"\n" +
         tables;
}

std::string error_of(const std::string& text) {
  auto result = parse(text, "/etc/mxgate");
  if (result) return "OK";
  EXPECT_EQ(result.error().find('\n'), std::string::npos) << result.error();
  return result.error();
}

TEST(FilterConfigTest, DefaultsProtectTheAcceptedDomains) {
  auto config = parse(document("accept_domains = [\"Example.TEST\", \"other.test\"]\n", ""), "/etc");
  ASSERT_TRUE(config) << config.error();
  const Filter& f = config->filter;
  EXPECT_TRUE(f.enabled);
  EXPECT_EQ(f.protected_domains, (std::vector<std::string>{"example.test", "other.test"}));
  EXPECT_TRUE(f.protected_names.empty());
  EXPECT_EQ(f.clamd, "");
  EXPECT_DOUBLE_EQ(f.spam_threshold, 5.0);
  EXPECT_EQ(f.actions.spam, FilterAction::quarantine);
  EXPECT_EQ(f.actions.phishing, FilterAction::reject);
  EXPECT_EQ(f.actions.malware, FilterAction::reject);
  EXPECT_EQ(f.actions.impersonation, FilterAction::quarantine);
  EXPECT_EQ(f.on_failure, FilterAction::tempfail);
  EXPECT_EQ(f.time_budget, std::chrono::seconds(60));
  EXPECT_EQ(f.max_mime_depth, 20u);
  EXPECT_EQ(f.bayes_db, "/var/spool/mxgate/bayes.sqlite");
  EXPECT_EQ(f.bayes_min_spam, 200u);
  EXPECT_EQ(f.bayes_min_ham, 200u);
  EXPECT_FALSE(f.reject_dnsbl_clients);
  EXPECT_FALSE(f.reject_spf_fail);
  EXPECT_FALSE(f.reject_invalid_helo);
}

TEST(FilterConfigTest, TheIssuesExampleIsRead) {
  auto config = parse(document("accept_domains = [\"example.test\"]\n",
                               "[filter]\n"
                               "protected_domains = [\"example.test\"]\n"
                               "protected_names = [\"Alice Martin\"]\n"
                               "clamd = \"unix:/run/clamav/clamd.ctl\"\n"
                               "spam_threshold = 5.0\n"
                               "[filter.actions]\n"
                               "spam = \"quarantine\"\n"
                               "phishing = \"reject\"\n"
                               "malware = \"reject\"\n"
                               "impersonation = \"quarantine\"\n"),
                      "/etc");
  ASSERT_TRUE(config) << config.error();
  EXPECT_EQ(config->filter.protected_names, (std::vector<std::string>{"Alice Martin"}));
  EXPECT_EQ(config->filter.clamd, "unix:/run/clamav/clamd.ctl");
}

TEST(FilterConfigTest, EveryOtherKeyIsRead) {
  auto config = parse(document("",
                               "[filter]\n"
                               "enabled = false\n"
                               "protected_domains = []\n"
                               "clamd = \"tcp:127.0.0.1:3310\"\n"
                               "clamd_max_stream = 1048576\n"
                               "spam_threshold = 7\n"
                               "phishing_threshold = 2.5\n"
                               "malware_threshold = 0.5\n"
                               "impersonation_threshold = 1.5\n"
                               "on_failure = \"accept\"\n"
                               "subject_tag = \"[SPAM]\"\n"
                               "time_budget = 20\n"
                               "max_mime_depth = 5\n"
                               "max_mime_parts = 50\n"
                               "max_decoded_size = 1000000\n"
                               "max_archive_depth = 2\n"
                               "max_archive_entries = 100\n"
                               "max_archive_expanded = 2000000\n"
                               "bayes_db = \"bayes/tokens.db\"\n"
                               "bayes_min_spam = 10\n"
                               "bayes_min_ham = 20\n"
                               "rules = \"rules/local.toml\"\n"
                               "dnsbl = [\"BL.example\"]\n"
                               "reject_dnsbl_clients = true\n"
                               "reject_spf_fail = true\n"
                               "reject_invalid_helo = true\n"
                               "[filter.rule_scores]\n"
                               "BODY_CLICK_HERE = 0\n"
                               "SUBJ_FREE = -1.5\n"
                               "[filter.actions]\n"
                               "spam = \"tag\"\n"
                               "phishing = \"tempfail\"\n"
                               "malware = \"quarantine\"\n"
                               "impersonation = \"accept\"\n"),
                      "/etc");
  ASSERT_TRUE(config) << config.error();
  const Filter& f = config->filter;
  EXPECT_FALSE(f.enabled);
  EXPECT_TRUE(f.protected_domains.empty());
  EXPECT_EQ(f.clamd_max_stream, 1048576u);
  EXPECT_DOUBLE_EQ(f.spam_threshold, 7.0);
  EXPECT_DOUBLE_EQ(f.phishing_threshold, 2.5);
  EXPECT_DOUBLE_EQ(f.malware_threshold, 0.5);
  EXPECT_DOUBLE_EQ(f.impersonation_threshold, 1.5);
  EXPECT_EQ(f.on_failure, FilterAction::accept);
  EXPECT_EQ(f.subject_tag, "[SPAM]");
  EXPECT_EQ(f.time_budget, std::chrono::seconds(20));
  EXPECT_EQ(f.max_mime_depth, 5u);
  EXPECT_EQ(f.max_mime_parts, 50u);
  EXPECT_EQ(f.max_decoded_size, 1000000u);
  EXPECT_EQ(f.max_archive_depth, 2u);
  EXPECT_EQ(f.max_archive_entries, 100u);
  EXPECT_EQ(f.max_archive_expanded, 2000000u);
  EXPECT_EQ(f.bayes_db, "/etc/bayes/tokens.db");
  EXPECT_EQ(f.bayes_min_spam, 10u);
  EXPECT_EQ(f.bayes_min_ham, 20u);
  EXPECT_EQ(f.rules, "/etc/rules/local.toml");
  EXPECT_EQ(f.dnsbl, (std::vector<std::string>{"bl.example"}));
  EXPECT_TRUE(f.reject_dnsbl_clients);
  EXPECT_TRUE(f.reject_spf_fail);
  EXPECT_TRUE(f.reject_invalid_helo);
  EXPECT_EQ(f.rule_scores, (std::map<std::string, double>{{"BODY_CLICK_HERE", 0.0}, {"SUBJ_FREE", -1.5}}));
  EXPECT_EQ(f.actions.spam, FilterAction::tag);
  EXPECT_EQ(f.actions.phishing, FilterAction::tempfail);
  EXPECT_EQ(f.actions.malware, FilterAction::quarantine);
  EXPECT_EQ(f.actions.impersonation, FilterAction::accept);
}

TEST(FilterConfigTest, MistakesNameTheKey) {
  EXPECT_EQ(error_of(document("", "[filter]\nspam_treshold = 5.0\n")), "filter.spam_treshold: unknown key");
  EXPECT_EQ(error_of(document("", "[filter]\nspam_threshold = \"high\"\n")), "filter.spam_threshold: expected a number");
  EXPECT_EQ(error_of(document("", "[filter]\nspam_threshold = -1.0\n")),
            "filter.spam_threshold: must be a number from 0 to 1e9");
  EXPECT_EQ(error_of(document("", "[filter]\nspam_threshold = nan\n")),
            "filter.spam_threshold: must be a number from 0 to 1e9");
  EXPECT_EQ(error_of(document("", "[filter.actions]\nspam = \"drop\"\n")),
            "filter.actions.spam: expected one of accept, tag, quarantine, reject, tempfail");
  EXPECT_EQ(error_of(document("", "[filter.actions]\nvirus = \"reject\"\n")), "filter.actions.virus: unknown key");
  EXPECT_EQ(error_of(document("", "[filter]\nclamd = \"/run/clamav/clamd.ctl\"\n")),
            "filter.clamd: \"/run/clamav/clamd.ctl\" is not \"unix:/path\" or \"tcp:host:port\"");
  EXPECT_EQ(error_of(document("", "[filter]\nprotected_domains = [\"not a domain\"]\n")),
            "filter.protected_domains[0]: \"not a domain\" is not a domain name");
  EXPECT_EQ(error_of(document("", "[filter]\nenabled = 1\n")), "filter.enabled: expected true or false");
  EXPECT_EQ(error_of(document("", "[filter]\nmax_mime_depth = 0\n")),
            "filter.max_mime_depth: must be between 1 and 1000");
  EXPECT_EQ(error_of(document("", "[filter]\nrules = \"\"\n")), "filter.rules: must not be empty");
  EXPECT_EQ(error_of(document("", "[filter.rule_scores]\nSUBJ_FREE = \"off\"\n")),
            "filter.rule_scores.SUBJ_FREE: must be a number");
  EXPECT_EQ(error_of(document("", "[filter.rule_scores]\nSUBJ_FREE = inf\n")),
            "filter.rule_scores.SUBJ_FREE: must be a number");
  EXPECT_EQ(error_of(document("", "[filter]\nreject_dnsbl_clients = true\n")),
            "filter.reject_dnsbl_clients: needs at least one filter.dnsbl zone to look clients up in");
  EXPECT_EQ(error_of(document("", "[filter]\non_failure = \"ignore\"\n")),
            "filter.on_failure: expected one of accept, tag, quarantine, reject, tempfail");
}

}  // namespace
}  // namespace mxgate::config
