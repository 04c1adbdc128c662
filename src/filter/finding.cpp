#include "filter/finding.hpp"

namespace mxgate::filter {

std::string_view to_string(Category category) {
  switch (category) {
    case Category::spam: return "spam";
    case Category::phishing: return "phishing";
    case Category::malware: return "malware";
    case Category::impersonation: return "impersonation";
  }
  return "spam";
}

}  // namespace mxgate::filter
