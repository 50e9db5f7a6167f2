// parallel.h — a team of OpenMP threads and the even split of work among them.
//
// Drivers take a Team and do their share, so one parallel region can run a whole forward pass
// with a barrier between ops (a fork/join per op costs more than the small ops themselves).
#pragma once

#include <omp.h>

namespace polyvit::cpu {

struct Team {
  int id, size;
  // [*begin, *end): this thread's share of n items, shares differing by at most one
  void split(long n, long* begin, long* end) const {
    *begin = n * id / size;
    *end = n * (id + 1) / size;
  }
};

inline void barrier() {
#pragma omp barrier
}

// Runs fn(Team) on `threads` threads (the caller is one of them).
template <class Fn>
void parallel(int threads, Fn&& fn) {
  if (threads <= 1) {
    fn(Team{0, 1});
    return;
  }
#pragma omp parallel num_threads(threads)
  fn(Team{omp_get_thread_num(), omp_get_num_threads()});
}

}  // namespace polyvit::cpu
