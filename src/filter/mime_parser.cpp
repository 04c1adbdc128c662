#include "filter/mime_parser.hpp"

#include <gmime/gmime.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace mxgate::filter {
namespace {

// GObject references, released on scope exit.
struct ObjectUnref {
  void operator()(gpointer object) const { g_object_unref(object); }
};
template <class T>
using GPtr = std::unique_ptr<T, ObjectUnref>;

struct GFree {
  void operator()(gpointer p) const { g_free(p); }
};
using GString_ = std::unique_ptr<char, GFree>;

void ensure_gmime() {
  // GMime's own process-wide initialisation (charset tables, type
  // registration); it must run once before any other call, from any thread.
  static std::once_flag once;
  std::call_once(once, [] { g_mime_init(); });
}

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c); });
  return out;
}

std::string str(const char* text) { return text == nullptr ? std::string() : std::string(text); }

void add_mailboxes(InternetAddressList* list, std::vector<Mailbox>& out, std::size_t max) {
  if (list == nullptr) return;
  // Groups are flattened one level deep (RFC 5322 forbids nested groups).
  const int count = internet_address_list_length(list);
  for (int i = 0; i < count && out.size() < max; ++i) {
    InternetAddress* address = internet_address_list_get_address(list, i);
    if (INTERNET_ADDRESS_IS_GROUP(address)) {
      InternetAddressList* members = internet_address_group_get_members(INTERNET_ADDRESS_GROUP(address));
      const int n = members ? internet_address_list_length(members) : 0;
      for (int j = 0; j < n && out.size() < max; ++j) {
        InternetAddress* member = internet_address_list_get_address(members, j);
        if (!INTERNET_ADDRESS_IS_MAILBOX(member)) continue;
        Mailbox mailbox;
        mailbox.display_name = str(internet_address_get_name(member));
        mailbox.address = str(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(member)));
        out.push_back(std::move(mailbox));
      }
      continue;
    }
    if (!INTERNET_ADDRESS_IS_MAILBOX(address)) continue;
    Mailbox mailbox;
    mailbox.display_name = str(internet_address_get_name(address));
    mailbox.address = str(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(address)));
    out.push_back(std::move(mailbox));
  }
  for (Mailbox& mailbox : out) {
    const auto at = mailbox.address.rfind('@');
    mailbox.domain = at == std::string::npos ? std::string() : lower(mailbox.address.substr(at + 1));
  }
}

// The part's content with its transfer encoding undone; text converted to
// UTF-8 from its declared charset when utf8 is set.
std::string decode_part(GMimePart* part, bool utf8) {
  GMimeDataWrapper* wrapper = g_mime_part_get_content(part);
  if (wrapper == nullptr) return {};
  GPtr<GMimeStream> memory(g_mime_stream_mem_new());
  GMimeStream* target = memory.get();
  GPtr<GMimeStream> filtered;
  if (utf8) {
    const char* charset = g_mime_object_get_content_type_parameter(GMIME_OBJECT(part), "charset");
    if (charset != nullptr && g_ascii_strcasecmp(charset, "utf-8") != 0 &&
        g_ascii_strcasecmp(charset, "us-ascii") != 0) {
      if (GMimeFilter* convert = g_mime_filter_charset_new(charset, "utf-8")) {
        filtered.reset(g_mime_stream_filter_new(memory.get()));
        g_mime_stream_filter_add(GMIME_STREAM_FILTER(filtered.get()), convert);
        g_object_unref(convert);
        target = filtered.get();
      }
    }
  }
  g_mime_data_wrapper_write_to_stream(wrapper, target);
  if (filtered) g_mime_stream_flush(filtered.get());
  GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(memory.get()));
  return bytes == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(bytes->data), bytes->len);
}

class Walker {
 public:
  Walker(ParsedMessage& out, const MimeLimits& limits) : out_(out), limits_(limits) {}

  void walk(GMimeObject* root) {
    // Explicit stack, children pushed in reverse so parts come out in
    // message order: hostile nesting cannot exhaust the thread's stack.
    std::vector<std::pair<GMimeObject*, unsigned>> stack;
    if (root != nullptr) stack.emplace_back(root, 0);
    while (!stack.empty() && out_.limit_exceeded.empty()) {
      auto [object, depth] = stack.back();
      stack.pop_back();
      if (GMIME_IS_MULTIPART(object)) {
        if (!nest(depth)) break;
        GMimeMultipart* multipart = GMIME_MULTIPART(object);
        for (int i = g_mime_multipart_get_count(multipart) - 1; i >= 0; --i)
          stack.emplace_back(g_mime_multipart_get_part(multipart, i), depth + 1);
      } else if (GMIME_IS_MESSAGE_PART(object)) {
        if (!nest(depth)) break;
        GMimeMessage* inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(object));
        if (inner != nullptr && g_mime_message_get_mime_part(inner) != nullptr)
          stack.emplace_back(g_mime_message_get_mime_part(inner), depth + 1);
      } else if (GMIME_IS_PART(object)) {
        leaf(GMIME_PART(object), depth);
      }
    }
  }

 private:
  bool nest(unsigned depth) {
    if (depth + 1 > limits_.max_depth) {
      out_.limit_exceeded = "MIME nesting deeper than " + std::to_string(limits_.max_depth);
      return false;
    }
    return true;
  }

  void leaf(GMimePart* part, unsigned depth) {
    if (out_.parts.size() >= limits_.max_parts) {
      out_.limit_exceeded = "more than " + std::to_string(limits_.max_parts) + " MIME parts";
      return;
    }
    GMimeObject* object = GMIME_OBJECT(part);
    Part result;
    result.depth = depth;
    if (GMimeContentType* type = g_mime_object_get_content_type(object)) {
      GString_ mime_type(g_mime_content_type_get_mime_type(type));
      result.content_type = lower(str(mime_type.get()));
    }
    if (result.content_type.empty()) result.content_type = "text/plain";
    result.filename = str(g_mime_part_get_filename(part));
    GMimeContentDisposition* disposition = g_mime_object_get_content_disposition(object);
    const bool is_text = result.content_type == "text/plain" || result.content_type == "text/html";
    result.attachment = (disposition != nullptr && g_mime_content_disposition_is_attachment(disposition)) ||
                        (!is_text && !result.filename.empty());
    result.data = decode_part(part, is_text && !result.attachment);
    const std::uint64_t room = limits_.max_decoded_bytes - decoded_;
    if (result.data.size() > room) {
      result.data.resize(room);
      result.truncated = true;
      out_.limit_exceeded = "decoded parts larger than " + std::to_string(limits_.max_decoded_bytes) + " bytes";
    }
    decoded_ += result.data.size();
    if (is_text && !result.attachment) {
      std::string& body = result.content_type == "text/html" ? out_.html : out_.text;
      if (!body.empty()) body += '\n';
      body += result.data;
    }
    out_.parts.push_back(std::move(result));
  }

  ParsedMessage& out_;
  const MimeLimits& limits_;
  std::uint64_t decoded_ = 0;
};

}  // namespace

ParsedMessage parse_mime(std::string_view content, const MimeLimits& limits) {
  ensure_gmime();
  ParsedMessage out;
  GPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(content.data(), content.size()));
  GPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
  g_mime_parser_set_format(parser.get(), GMIME_FORMAT_MESSAGE);
  GPtr<GMimeMessage> message(g_mime_parser_construct_message(parser.get(), nullptr));
  if (!message) {
    Part whole;
    whole.content_type = "text/plain";
    whole.data = std::string(content.substr(0, limits.max_decoded_bytes));
    whole.truncated = whole.data.size() < content.size();
    out.text = whole.data;
    out.parts.push_back(std::move(whole));
    return out;
  }

  constexpr std::size_t kMaxMailboxes = 100;
  std::vector<Mailbox> from;
  add_mailboxes(g_mime_message_get_from(message.get()), from, 1);
  if (!from.empty()) out.from = std::move(from.front());
  add_mailboxes(g_mime_message_get_reply_to(message.get()), out.reply_to, kMaxMailboxes);
  out.subject = str(g_mime_message_get_subject(message.get()));
  if (GMimeHeaderList* headers = g_mime_object_get_header_list(GMIME_OBJECT(message.get()))) {
    const int count = g_mime_header_list_get_count(headers);
    for (int i = 0; i < count; ++i) {
      GMimeHeader* header = g_mime_header_list_get_header_at(headers, i);
      out.headers.push_back(HeaderField{str(g_mime_header_get_name(header)), str(g_mime_header_get_value(header))});
    }
  }
  Walker(out, limits).walk(g_mime_message_get_mime_part(message.get()));
  out.html_body = scan_html(out.html);
  return out;
}

}  // namespace mxgate::filter
