#include "filter/rule_set.hpp"

#include <algorithm>
#include <cmath>
#include <set>
#include <toml++/toml.h>

#include "util/quoted.hpp"

namespace mxgate::filter {
namespace {

constexpr std::size_t kMaxRuleName = 64;

bool valid_name(std::string_view name) {
  return !name.empty() && name.size() <= kMaxRuleName && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
         });
}

// A header field name (RFC 5322 section 3.6.8: printable ASCII but ':').
bool valid_field(std::string_view field) {
  return !field.empty() && std::all_of(field.begin(), field.end(), [](char c) { return c > ' ' && c < 127 && c != ':'; });
}

std::optional<RuleTarget> target_from(std::string_view text) {
  for (const RuleTarget t : {RuleTarget::header, RuleTarget::body, RuleTarget::rawbody, RuleTarget::uri,
                             RuleTarget::full}) {
    if (to_string(t) == text) return t;
  }
  return std::nullopt;
}

}  // namespace

std::string_view to_string(RuleTarget target) {
  switch (target) {
    case RuleTarget::header: return "header";
    case RuleTarget::body: return "body";
    case RuleTarget::rawbody: return "rawbody";
    case RuleTarget::uri: return "uri";
    case RuleTarget::full: return "full";
  }
  return "?";
}

Result<std::vector<Rule>> parse_rules(std::string_view toml_text, std::string_view source) {
  const std::string file(source);
  toml::table root;
  try {
    root = toml::parse(toml_text);
  } catch (const toml::parse_error& e) {
    return make_error(file + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
  }
  for (const auto& [key, value] : root) {
    if (key.str() != "rule") return make_error(file + ": unknown key " + quote_escaped(key.str()) + " (expected [[rule]])");
  }
  const toml::array* list = root["rule"].as_array();
  if (list == nullptr) {
    if (root.contains("rule")) return make_error(file + ": rule must be an array of tables ([[rule]])");
    return std::vector<Rule>{};
  }
  std::vector<Rule> rules;
  std::set<std::string, std::less<>> names;
  for (std::size_t i = 0; i < list->size(); ++i) {
    const toml::table* t = list->get(i)->as_table();
    std::string where = file + ": rule[" + std::to_string(i) + "]";
    if (t == nullptr) return make_error(where + ": not a table");
    Rule rule;
    if (auto name = t->get_as<std::string>("name")) rule.name = name->get();
    if (!valid_name(rule.name))
      return make_error(where + ": name must be 1 to 64 of A-Z, 0-9 and _ (got " + quote_escaped(rule.name) + ")");
    where += " (" + rule.name + ")";
    if (!names.insert(rule.name).second) return make_error(where + ": the name is used twice");
    for (const auto& [key, value] : *t) {
      static const std::set<std::string_view> kKeys{"name",   "target", "field", "pattern",       "flags",
                                                    "negate", "score",  "score_no_bayes", "description"};
      if (!kKeys.contains(key.str())) return make_error(where + ": unknown key " + quote_escaped(key.str()));
    }
    const auto target = t->get_as<std::string>("target");
    if (target == nullptr) return make_error(where + ": target is missing");
    const auto parsed_target = target_from(target->get());
    if (!parsed_target)
      return make_error(where + ": unknown target " + quote_escaped(target->get()) +
                        " (header, body, rawbody, uri or full)");
    rule.target = *parsed_target;
    if (auto field = t->get_as<std::string>("field")) rule.field = field->get();
    if (rule.target == RuleTarget::header && !valid_field(rule.field))
      return make_error(where + ": a header rule needs field = \"Name\" (or \"ALL\")");
    if (rule.target != RuleTarget::header && t->contains("field"))
      return make_error(where + ": field is for target = \"header\" only");
    const auto pattern = t->get_as<std::string>("pattern");
    if (pattern == nullptr || pattern->get().empty()) return make_error(where + ": pattern is missing");
    rule.pattern = pattern->get();
    if (t->contains("flags")) {
      const auto flags = t->get_as<std::string>("flags");
      if (flags == nullptr) return make_error(where + ": flags must be a string of i, s, m");
      for (const char c : flags->get()) {
        if (c == 'i') {
          rule.caseless = true;
        } else if (c == 's') {
          rule.dotall = true;
        } else if (c == 'm') {
          rule.multiline = true;
        } else {
          return make_error(where + ": unknown flag " + quote_escaped(std::string(1, c)) + " (i, s, m)");
        }
      }
    }
    if (t->contains("negate")) {
      const auto negate = t->get_as<bool>("negate");
      if (negate == nullptr) return make_error(where + ": negate must be true or false");
      rule.negate = negate->get();
    }
    for (const char* key : {"score", "score_no_bayes"}) {
      const bool main_score = std::string_view(key) == "score";
      const auto* node = t->get(key);
      if (node == nullptr && !main_score) {
        rule.score_no_bayes = rule.score;
        continue;
      }
      if (node == nullptr || !node->is_number()) return make_error(where + ": " + key + " must be a number");
      const double value = node->value<double>().value_or(0);
      if (!std::isfinite(value) || std::fabs(value) > 1000)
        return make_error(where + ": " + key + " must lie within -1000 and 1000");
      (main_score ? rule.score : rule.score_no_bayes) = value;
    }
    if (auto description = t->get_as<std::string>("description")) rule.description = description->get();
    rules.push_back(std::move(rule));
  }
  return rules;
}

Result<void> apply_rule_scores(std::vector<Rule>& rules, const std::map<std::string, double>& scores) {
  for (const auto& [name, score] : scores) {
    auto it = std::find_if(rules.begin(), rules.end(), [&](const Rule& r) { return r.name == name; });
    if (it == rules.end()) return make_error("filter.rule_scores: no rule named " + quote_escaped(name));
    it->score = score;
    it->score_no_bayes = score;
  }
  return {};
}

}  // namespace mxgate::filter
