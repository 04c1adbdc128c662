// The weighted spam rules (rule_set.hpp) compiled into Vectorscan databases
// and run against a message: every rule of one view of the message in one
// pass, whatever the number of rules (Hyperscan's multi-pattern automata;
// Vectorscan is its portable fork, packaged by Debian).
//
// One block-mode database per view: body, rawbody, uri, full, and one per
// header field named by a rule (all rules on "Subject" share one).  Every
// expression is compiled with HS_FLAG_SINGLEMATCH: a rule scores once
// however often it matches.  Scratch space (Vectorscan's per-scan working
// memory) is not thread-safe; a small pool hands one to each concurrent
// check() and takes it back, so one engine serves every thread.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "filter/finding.hpp"
#include "filter/parsed_message.hpp"
#include "filter/rule_set.hpp"
#include "util/result.hpp"

struct hs_database;
struct hs_scratch;

namespace mxgate::filter {

class RuleEngine {
 public:
  // Refuses a pattern Vectorscan cannot compile, naming the rule
  // ("rule SUBJ_FREE: Invalid parse ...").
  static Result<std::unique_ptr<RuleEngine>> compile(std::vector<Rule> rules);
  ~RuleEngine();
  RuleEngine(const RuleEngine&) = delete;
  RuleEngine& operator=(const RuleEngine&) = delete;

  // A Category::spam finding for every rule that fires, with its
  // description as detail, scored with Rule::score, or with
  // Rule::score_no_bayes when the Bayes classifier gave no finding; a
  // Vectorscan failure is a check failure.
  Findings check(std::string_view content, const ParsedMessage& message, bool bayes_active = true) const;

  const std::vector<Rule>& rules() const { return rules_; }

 private:
  struct DatabaseFree {
    void operator()(hs_database* db) const;
  };
  struct ScratchFree {
    void operator()(hs_scratch* scratch) const;
  };
  using DatabasePtr = std::unique_ptr<hs_database, DatabaseFree>;
  using ScratchPtr = std::unique_ptr<hs_scratch, ScratchFree>;

  // The rules of one view; ids index rules_.
  struct Group {
    RuleTarget target = RuleTarget::body;
    std::string field;  // target header: the field name (or "ALL")
    std::vector<unsigned> rule_ids;
    DatabasePtr database;
  };

  explicit RuleEngine(std::vector<Rule> rules) : rules_(std::move(rules)) {}
  ScratchPtr take_scratch() const;
  void give_back(ScratchPtr scratch) const;
  // Scans text with group's database, marking matched rules; false on a
  // Vectorscan error.
  bool scan(const Group& group, std::string_view text, hs_scratch* scratch, std::vector<char>& matched) const;

  std::vector<Rule> rules_;
  std::vector<Group> groups_;
  ScratchPtr prototype_;  // sized for every database; cloned for the pool
  mutable std::mutex pool_mutex_;
  mutable std::vector<ScratchPtr> pool_;
};

// The texts the views see, exposed for the unit tests.
std::string rule_view(RuleTarget target, std::string_view content, const ParsedMessage& message);

}  // namespace mxgate::filter
