//! TODO(owner): see docs/interfaces.md
