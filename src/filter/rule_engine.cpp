#include "filter/rule_engine.hpp"

#include <hs/hs.h>

#include <algorithm>
#include <climits>

#include "filter/url.hpp"

namespace mxgate::filter {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return (x >= 'A' && x <= 'Z' ? x + 32 : x) == (y >= 'A' && y <= 'Z' ? y + 32 : y);
         });
}

int on_match(unsigned id, unsigned long long /*from*/, unsigned long long /*to*/, unsigned /*flags*/,
             void* context) {
  (*static_cast<std::vector<char>*>(context))[id] = 1;
  return 0;  // go on: other rules may match later in the text
}

}  // namespace

void RuleEngine::DatabaseFree::operator()(hs_database* db) const { hs_free_database(db); }
void RuleEngine::ScratchFree::operator()(hs_scratch* scratch) const { hs_free_scratch(scratch); }

RuleEngine::~RuleEngine() = default;

std::string rule_view(RuleTarget target, std::string_view content, const ParsedMessage& message) {
  std::string out;
  switch (target) {
    case RuleTarget::body:
      out = message.subject;
      for (const std::string* part : {&message.text, &message.html_body.text}) {
        if (part->empty()) continue;
        out += '\n';
        out += *part;
      }
      break;
    case RuleTarget::rawbody:
      out = message.text;
      if (!message.html.empty()) {
        if (!out.empty()) out += '\n';
        out += message.html;
      }
      break;
    case RuleTarget::uri: {
      auto add = [&](std::string_view url) {
        out.append(url);
        out += '\n';
      };
      for (const auto& url : find_urls(message.text).urls) add(url);
      for (const auto& link : message.html_body.links) add(link.href);
      for (const auto& url : find_urls(message.html_body.text).urls) add(url);
      break;
    }
    case RuleTarget::full:
      out = content;
      break;
    case RuleTarget::header:
      for (const auto& h : message.headers) {
        out += h.name;
        out += ": ";
        out += h.value;
        out += '\n';
      }
      break;
  }
  return out;
}

Result<std::unique_ptr<RuleEngine>> RuleEngine::compile(std::vector<Rule> rules) {
  if (hs_valid_platform() != HS_SUCCESS) return make_error("Vectorscan does not support this CPU");
  std::unique_ptr<RuleEngine> engine(new RuleEngine(std::move(rules)));
  for (unsigned id = 0; id < engine->rules_.size(); ++id) {
    const Rule& rule = engine->rules_[id];
    auto it = std::find_if(engine->groups_.begin(), engine->groups_.end(), [&](const Group& g) {
      return g.target == rule.target && iequals(g.field, rule.field);
    });
    if (it == engine->groups_.end()) {
      engine->groups_.push_back(Group{rule.target, rule.field, {}, nullptr});
      it = std::prev(engine->groups_.end());
    }
    it->rule_ids.push_back(id);
  }
  hs_scratch_t* prototype = nullptr;
  for (Group& group : engine->groups_) {
    std::vector<const char*> patterns;
    std::vector<unsigned> flags;
    for (const unsigned id : group.rule_ids) {
      const Rule& rule = engine->rules_[id];
      patterns.push_back(rule.pattern.c_str());
      flags.push_back(HS_FLAG_SINGLEMATCH | (rule.caseless ? HS_FLAG_CASELESS : 0u) |
                      (rule.dotall ? HS_FLAG_DOTALL : 0u) | (rule.multiline ? HS_FLAG_MULTILINE : 0u));
    }
    hs_database_t* db = nullptr;
    hs_compile_error_t* error = nullptr;
    if (hs_compile_multi(patterns.data(), flags.data(), group.rule_ids.data(),
                         static_cast<unsigned>(patterns.size()), HS_MODE_BLOCK, nullptr, &db, &error) != HS_SUCCESS) {
      std::string message = error != nullptr && error->message != nullptr ? error->message : "compile failed";
      std::string rule = "rules";
      if (error != nullptr && error->expression >= 0 &&
          static_cast<std::size_t>(error->expression) < group.rule_ids.size())
        rule = "rule " + engine->rules_[group.rule_ids[static_cast<std::size_t>(error->expression)]].name;
      hs_free_compile_error(error);
      if (prototype != nullptr) hs_free_scratch(prototype);
      return make_error(rule + ": " + message);
    }
    group.database.reset(db);
    if (hs_alloc_scratch(db, &prototype) != HS_SUCCESS) {
      if (prototype != nullptr) hs_free_scratch(prototype);
      return make_error("rules: cannot allocate Vectorscan scratch space");
    }
  }
  engine->prototype_.reset(prototype);
  return engine;
}

RuleEngine::ScratchPtr RuleEngine::take_scratch() const {
  {
    const std::lock_guard lock(pool_mutex_);
    if (!pool_.empty()) {
      ScratchPtr scratch = std::move(pool_.back());
      pool_.pop_back();
      return scratch;
    }
  }
  hs_scratch_t* clone = nullptr;
  if (hs_clone_scratch(prototype_.get(), &clone) != HS_SUCCESS) return nullptr;
  return ScratchPtr(clone);
}

void RuleEngine::give_back(ScratchPtr scratch) const {
  const std::lock_guard lock(pool_mutex_);
  pool_.push_back(std::move(scratch));
}

bool RuleEngine::scan(const Group& group, std::string_view text, hs_scratch* scratch,
                      std::vector<char>& matched) const {
  // hs_scan takes an unsigned length; the MIME parser's decoded-size limit
  // keeps real views far below it.
  const auto size = static_cast<unsigned>(std::min<std::size_t>(text.size(), UINT_MAX));
  return hs_scan(group.database.get(), text.data(), size, 0, scratch, on_match, &matched) == HS_SUCCESS;
}

Findings RuleEngine::check(std::string_view content, const ParsedMessage& message, bool bayes_active) const {
  Findings out;
  if (rules_.empty()) return out;
  ScratchPtr scratch = take_scratch();
  if (!scratch) {
    out.fail("rules", "cannot allocate Vectorscan scratch space");
    return out;
  }
  std::vector<char> matched(rules_.size(), 0);
  bool ok = true;
  for (const Group& group : groups_) {
    if (group.target != RuleTarget::header) {
      ok = ok && scan(group, group.target == RuleTarget::full ? content : rule_view(group.target, content, message),
                      scratch.get(), matched);
    } else if (iequals(group.field, "ALL")) {
      ok = ok && scan(group, rule_view(RuleTarget::header, content, message), scratch.get(), matched);
    } else {
      for (const auto& h : message.headers) {
        if (iequals(h.name, group.field)) ok = ok && scan(group, h.value, scratch.get(), matched);
      }
    }
  }
  give_back(std::move(scratch));
  if (!ok) {
    out.fail("rules", "Vectorscan scan failed");
    return out;
  }
  for (std::size_t id = 0; id < rules_.size(); ++id) {
    const Rule& rule = rules_[id];
    const double score = bayes_active ? rule.score : rule.score_no_bayes;
    if ((matched[id] != 0) != rule.negate && score != 0) out.add(Category::spam, rule.name, score, rule.description);
  }
  return out;
}

}  // namespace mxgate::filter
