// Implements: Exporter (a small HTTP server for /metrics over POSIX sockets), scrape addresses
// and the file_sd file (see exporter.h).
#include "monitoring/exporter.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace gantry::monitoring {

namespace {

constexpr size_t kMaxRequestBytes = 8192;
constexpr int kIoTimeoutSeconds = 5;

std::string errno_text() { return std::strerror(errno); }

bool send_all(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

std::string response(const std::string& status, const std::string& content_type, const std::string& body) {
  return "HTTP/1.1 " + status + "\r\nContent-Type: " + content_type + "\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

}  // namespace

Exporter::Exporter(const std::string& bind, int port) : registry_(std::make_shared<prometheus::Registry>()) {
  const std::string where = bind + ":" + std::to_string(port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(bind.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0)
    throw std::runtime_error("monitoring: cannot resolve monitoring.bind " + bind + ": " + gai_strerror(rc));
  std::string error = "no address";
  for (addrinfo* a = found; a && listen_fd_ < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      error = errno_text();
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 16) == 0) {
      listen_fd_ = fd;
    } else {
      error = errno_text();
      ::close(fd);
    }
  }
  ::freeaddrinfo(found);
  if (listen_fd_ < 0)
    throw std::runtime_error("monitoring: cannot serve metrics on " + where + " (" + error +
                             "); is the port in use? choose another monitoring.port");
  sockaddr_storage local{};
  socklen_t length = sizeof local;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&local), &length);
  port_ = ntohs(local.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&local)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&local)->sin_port);
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
  if (stop_fd_ < 0) {
    ::close(listen_fd_);
    throw std::runtime_error("monitoring: eventfd: " + errno_text());
  }
  thread_ = std::thread([this] { serve(); });
}

Exporter::~Exporter() {
  const uint64_t one = 1;
  if (::write(stop_fd_, &one, sizeof one) < 0) {
    // the thread then stops at the next poll timeout
  }
  thread_.join();
  ::close(stop_fd_);
  ::close(listen_fd_);
}

std::string Exporter::scrape() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

void Exporter::serve() {
  pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  for (;;) {
    if (::poll(fds, 2, 1000) < 0 && errno != EINTR) return;
    if (fds[1].revents) return;
    if (!(fds[0].revents & POLLIN)) continue;
    const int connection = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection < 0) continue;
    answer(connection);
    ::close(connection);
  }
}

void Exporter::answer(int connection) const {
  const timeval timeout{kIoTimeoutSeconds, 0};
  ::setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  ::setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  std::string request;
  char buffer[1024];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < kMaxRequestBytes) {
    const ssize_t n = ::recv(connection, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    request.append(buffer, static_cast<size_t>(n));
  }
  const std::string line = request.substr(0, request.find("\r\n"));
  std::string path = line.substr(line.find(' ') + 1);
  path = path.substr(0, path.find(' '));
  path = path.substr(0, path.find('?'));
  const bool get = line.rfind("GET ", 0) == 0, head = line.rfind("HEAD ", 0) == 0;
  if ((get || head) && path == "/metrics") {
    std::string reply = response("200 OK", "text/plain; version=0.0.4; charset=utf-8", scrape());
    if (head) reply.resize(reply.find("\r\n\r\n") + 4);
    send_all(connection, reply);
  } else if (get || head) {
    send_all(connection, response("404 Not Found", "text/plain", "gantry serves /metrics only\n"));
  } else {
    send_all(connection, response("405 Method Not Allowed", "text/plain", "GET /metrics\n"));
  }
}

std::string scrape_address(const std::string& bind, const std::string& host, int port) {
  const bool any = bind.empty() || bind == "0.0.0.0" || bind == "::";
  const std::string h = any ? host : bind;
  return (h.find(':') != std::string::npos ? "[" + h + "]" : h) + ":" + std::to_string(port);
}

std::string file_sd_json(const std::string& run, const std::vector<std::string>& addresses) {
  nlohmann::json groups = nlohmann::json::array();
  for (size_t r = 0; r < addresses.size(); ++r)
    groups.push_back({{"targets", {addresses[r]}}, {"labels", {{"run", run}, {"rank", std::to_string(r)}}}});
  return groups.dump(2) + "\n";
}

void write_file_sd(const std::string& path, const std::string& run, const std::vector<std::string>& addresses) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << file_sd_json(run, addresses);
    if (!out.flush()) throw std::runtime_error("monitoring: cannot write " + tmp);
  }
  std::error_code error;
  std::filesystem::rename(tmp, path, error);
  if (error) throw std::runtime_error("monitoring: cannot rename " + tmp + " to " + path + ": " + error.message());
}

}  // namespace gantry::monitoring
