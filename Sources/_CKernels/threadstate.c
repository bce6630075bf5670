// Per-thread engine state (see include/threadstate.h).
#include "threadstate.h"

// Zero-initialised per thread, so "disabled" is stored: every new thread starts recording.
static _Thread_local int grad_disabled;

int pcd_grad_enabled(void) { return !grad_disabled; }

int pcd_set_grad_enabled(int on) {
  int previous = !grad_disabled;
  grad_disabled = !on;
  return previous;
}
