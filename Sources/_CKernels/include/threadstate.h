// Per-thread engine state, kept in C because Swift has no thread-local variables.
#ifndef PCDARTS_THREADSTATE_H
#define PCDARTS_THREADSTATE_H

/// Whether operations on the calling thread record the autograd graph (1, the default) or not.
int pcd_grad_enabled(void);

/// Sets the calling thread's grad mode; returns the previous one.
int pcd_set_grad_enabled(int on);

#endif
