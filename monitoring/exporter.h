// Implements: serving a metrics registry at http://bind:port/metrics (Prometheus text format) on
// a thread of its own, and Prometheus service discovery: the file_sd JSON file that lists every
// rank's scrape address with the labels `run` and `rank`.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace gantry::monitoring {

// A minimal HTTP/1.1 server: GET /metrics answers with the registry's metrics, anything else 404;
// one connection at a time, closed after each response (a scrape every few seconds is the load).
// It replaces prometheus-cpp's civetweb Exposer, whose 100 KiB thread stacks (Debian's build)
// are smaller than the static TLS of a process that loads LibTorch and OpenBLAS, so that
// pthread_create fails with EINVAL.
class Exporter {
 public:
  // Listens at once; throws std::runtime_error naming the address when it cannot.
  // Port 0 picks a free port (see port()).
  Exporter(const std::string& bind, int port);
  ~Exporter();  // stops serving and joins the thread
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  // The registry served; metrics registered into it appear at the next scrape.
  prometheus::Registry& registry() { return *registry_; }
  int port() const { return port_; }
  // The response body of GET /metrics right now.
  std::string scrape() const;

 private:
  void serve();
  void answer(int connection) const;

  std::shared_ptr<prometheus::Registry> registry_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // an eventfd: written once by the destructor
  int port_ = 0;
  std::thread thread_;
};

// The address Prometheus should scrape: the bind address, or `host` when bound to every
// interface ("0.0.0.0", "::" or empty).
std::string scrape_address(const std::string& bind, const std::string& host, int port);

// A Prometheus file_sd document: one target group per rank (addresses[r] is rank r's), each with
// the labels run=<run> and rank=<r>.
std::string file_sd_json(const std::string& run, const std::vector<std::string>& addresses);

// Writes file_sd_json() to `path` atomically (a temporary file, then a rename), so that
// Prometheus never reads half a file. Throws std::runtime_error when it cannot.
void write_file_sd(const std::string& path, const std::string& run, const std::vector<std::string>& addresses);

}  // namespace gantry::monitoring
