#include "smtp/received_header.hpp"

#include <cstdio>
#include <ctime>

namespace mxgate::smtp {

std::string_view protocol_name(bool ehlo, bool tls, bool smtputf8) {
  if (smtputf8) return tls ? "UTF8SMTPS" : "UTF8SMTP";
  if (!ehlo) return tls ? "SMTPS" : "SMTP";
  return tls ? "ESMTPS" : "ESMTP";
}

std::string rfc5322_date(std::chrono::system_clock::time_point when) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::time_t t = std::chrono::system_clock::to_time_t(when);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d +0000", kDays[tm.tm_wday],
                tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

std::string received_header(const ReceivedFields& f) {
  std::string h;
  h.reserve(256);
  h += "Received: from ";
  h += f.helo;
  h += " ([";
  h += f.client_ip;
  h += "])\r\n\tby ";
  h += f.hostname;
  h += " (mxgate) with ";
  h += f.protocol;
  h += " id ";
  h += f.queue_id;
  if (f.tls != nullptr) {
    h += "\r\n\t(using ";
    h += f.tls->version;
    h += " with cipher ";
    h += f.tls->cipher;
    h += " (";
    h += std::to_string(f.tls->bits);
    h += '/';
    h += std::to_string(f.tls->alg_bits);
    h += " bits))";
  }
  h += "\r\n\t";
  if (!f.recipient.empty()) {
    h += "for <";
    h += f.recipient;
    h += ">";
  }
  h += "; ";
  h += rfc5322_date(f.when);
  h += "\r\n";
  return h;
}

}  // namespace mxgate::smtp
