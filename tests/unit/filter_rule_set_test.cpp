// The rules file: every key, the errors an operator gets (one line, naming
// the file and the rule), and the built-in set loading and compiling.
#include <gtest/gtest.h>

#include <string>

#include "filter/rule_engine.hpp"
#include "filter/rule_set.hpp"

namespace mxgate::filter {
namespace {

std::string error_of(const std::string& text) {
  auto rules = parse_rules(text, "rules.toml");
  if (rules) return "OK";
  EXPECT_EQ(rules.error().find('\n'), std::string::npos) << rules.error();
  return rules.error();
}

TEST(RuleSet, EveryKeyIsRead) {
  auto rules = parse_rules(R"([[rule]]
name = "SUBJ_FREE"
target = "header"
field = "Subject"
pattern = '\bfree\b'
flags = "ism"
negate = true
score = -1.5
score_no_bayes = 0.25
description = "says free"

[[rule]]
name = "B2"
target = "uri"
pattern = "x"
score = 2
)",
                           "rules.toml");
  ASSERT_TRUE(rules) << rules.error();
  ASSERT_EQ(rules->size(), 2u);
  const Rule& r = rules->front();
  EXPECT_EQ(r.name, "SUBJ_FREE");
  EXPECT_EQ(r.target, RuleTarget::header);
  EXPECT_EQ(r.field, "Subject");
  EXPECT_EQ(r.pattern, "\\bfree\\b");
  EXPECT_TRUE(r.caseless && r.dotall && r.multiline && r.negate);
  EXPECT_DOUBLE_EQ(r.score, -1.5);
  EXPECT_DOUBLE_EQ(r.score_no_bayes, 0.25);
  EXPECT_EQ(r.description, "says free");
  const Rule& b = rules->back();
  EXPECT_EQ(b.target, RuleTarget::uri);
  EXPECT_FALSE(b.caseless || b.dotall || b.multiline || b.negate);
  EXPECT_DOUBLE_EQ(b.score, 2.0);  // an integer score is a number too
  EXPECT_DOUBLE_EQ(b.score_no_bayes, 2.0);  // absent: the score
}

TEST(RuleSet, AnEmptyFileIsAnEmptySet) {
  auto rules = parse_rules("# nothing\n", "rules.toml");
  ASSERT_TRUE(rules) << rules.error();
  EXPECT_TRUE(rules->empty());
}

TEST(RuleSet, ErrorsNameTheFileTheRuleAndTheKey) {
  const std::string ok = "target = \"body\"\npattern = \"x\"\nscore = 1\n";
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\n" + ok), "OK");
  EXPECT_EQ(error_of("[[rule]]\nname = \"lower\"\n" + ok),
            "rules.toml: rule[0]: name must be 1 to 64 of A-Z, 0-9 and _ (got \"lower\")");
  EXPECT_EQ(error_of("[[rule]]\n" + ok), "rules.toml: rule[0]: name must be 1 to 64 of A-Z, 0-9 and _ (got \"\")");
  EXPECT_EQ(error_of("[[rule]]\nname = \"" + std::string(65, 'A') + "\"\n" + ok).substr(0, 43),
            "rules.toml: rule[0]: name must be 1 to 64 o");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\n" + ok + "[[rule]]\nname = \"A\"\n" + ok),
            "rules.toml: rule[1] (A): the name is used twice");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\ntarget = \"bdy\"\npattern = \"x\"\nscore = 1\n"),
            "rules.toml: rule[0] (A): unknown target \"bdy\" (header, body, rawbody, uri or full)");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\npattern = \"x\"\nscore = 1\n"), "rules.toml: rule[0] (A): target is missing");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\ntarget = \"header\"\npattern = \"x\"\nscore = 1\n"),
            "rules.toml: rule[0] (A): a header rule needs field = \"Name\" (or \"ALL\")");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\ntarget = \"header\"\nfield = \"Sub ject\"\npattern = \"x\"\nscore = 1\n"),
            "rules.toml: rule[0] (A): a header rule needs field = \"Name\" (or \"ALL\")");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\nfield = \"Subject\"\n" + ok),
            "rules.toml: rule[0] (A): field is for target = \"header\" only");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\ntarget = \"body\"\nscore = 1\n"), "rules.toml: rule[0] (A): pattern is missing");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\ntarget = \"body\"\npattern = \"\"\nscore = 1\n"),
            "rules.toml: rule[0] (A): pattern is missing");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\nflags = \"ix\"\n" + ok), "rules.toml: rule[0] (A): unknown flag \"x\" (i, s, m)");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\nflags = 1\n" + ok), "rules.toml: rule[0] (A): flags must be a string of i, s, m");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\nnegate = \"yes\"\n" + ok), "rules.toml: rule[0] (A): negate must be true or false");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\ntarget = \"body\"\npattern = \"x\"\nscore = \"1\"\n"),
            "rules.toml: rule[0] (A): score must be a number");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\ntarget = \"body\"\npattern = \"x\"\n"), "rules.toml: rule[0] (A): score must be a number");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\ntarget = \"body\"\npattern = \"x\"\nscore = inf\n"),
            "rules.toml: rule[0] (A): score must lie within -1000 and 1000");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\ntarget = \"body\"\npattern = \"x\"\nscore = 1001\n"),
            "rules.toml: rule[0] (A): score must lie within -1000 and 1000");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\nscore_no_bayes = \"x\"\n" + ok),
            "rules.toml: rule[0] (A): score_no_bayes must be a number");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\nscore_no_bayes = -1e9\n" + ok),
            "rules.toml: rule[0] (A): score_no_bayes must lie within -1000 and 1000");
  EXPECT_EQ(error_of("[[rule]]\nname = \"A\"\nweight = 2\n" + ok), "rules.toml: rule[0] (A): unknown key \"weight\"");
  EXPECT_EQ(error_of("[rules]\n"), "rules.toml: unknown key \"rules\" (expected [[rule]])");
  EXPECT_EQ(error_of("rule = 3\n"), "rules.toml: rule must be an array of tables ([[rule]])");
  EXPECT_EQ(error_of("rule = [1]\n"), "rules.toml: rule[0]: not a table");
  EXPECT_EQ(error_of("[[rule]]\nname = \n").rfind("rules.toml:2: ", 0), 0u);
}

TEST(RuleSet, ScoresAreReplacedByName) {
  auto rules = parse_rules("[[rule]]\nname = \"A\"\ntarget = \"body\"\npattern = \"x\"\nscore = 1\nscore_no_bayes = 2\n", "r");
  ASSERT_TRUE(rules) << rules.error();
  ASSERT_TRUE(apply_rule_scores(*rules, {{"A", 0.0}}));
  EXPECT_DOUBLE_EQ(rules->front().score, 0.0);
  EXPECT_DOUBLE_EQ(rules->front().score_no_bayes, 0.0);  // the operator's score holds in both modes
  const auto unknown = apply_rule_scores(*rules, {{"B", 1.0}});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error(), "filter.rule_scores: no rule named \"B\"");
}

TEST(RuleSet, TheBuiltInSetLoadsAndCompiles) {
  auto rules = parse_rules(default_rules_text(), "built-in rules");
  ASSERT_TRUE(rules) << rules.error();
  EXPECT_GE(rules->size(), 50u);
  // Evidence, not verdicts: no single rule reaches the default threshold.
  for (const Rule& rule : *rules) {
    EXPECT_LT(rule.score, 5.0) << rule.name;
    EXPECT_LT(rule.score_no_bayes, 5.0) << rule.name;
    EXPECT_FALSE(rule.description.empty()) << rule.name;
  }
  auto engine = RuleEngine::compile(std::move(rules.value()));
  ASSERT_TRUE(engine) << engine.error();
}

}  // namespace
}  // namespace mxgate::filter
