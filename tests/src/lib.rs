//! Testbed for kubelet-rubber-stamp.
