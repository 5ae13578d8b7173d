"""The demo's story: who calls what, when, and the incidents KeyTrail should catch."""
