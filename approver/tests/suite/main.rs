//! Integration tests of the approver: the `check` command as a process, and the layers of
//! the product crates.

mod check_command;
mod layers;
