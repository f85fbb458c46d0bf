//! The policy engine: a pure function from a Pod (as JSON) and a policy to changes,
//! warnings and a decision.
