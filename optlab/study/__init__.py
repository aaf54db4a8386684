"""The study runs recipes against a baseline through an executor, stores rows crash-safely
under fingerprints, and owns the derived figures: costs, the Pareto front, the
recommendation, tidy reshaping."""
