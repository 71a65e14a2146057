//! Integration tests of the `check` command: `rubber-stamp-approver check` as a process.

mod check_command;
