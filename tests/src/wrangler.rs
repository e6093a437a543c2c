//! Runs the built Worker under `wrangler dev` with a fresh `--persist-to` folder per test.
