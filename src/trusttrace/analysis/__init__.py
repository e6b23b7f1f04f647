"""What is computed from activations: probes (batched logistic regression, its line search, the protocols'
folds, controls), mutual information (estimators, intervals, nulls), the phase rule, correlations, and the
`probe` job."""
