# lme4 figures for correlated random slopes in mixed GLMs, (1 + x | g), fitted by glmer
# (Laplace, nAGQ = 1) with tight bobyqa tolerances: tests/test_covariance.py.
# Regenerate, from the repository root, with
#   Rscript tests/reference/glmer_corr.R /work/shared/data > tests/reference/glmer_corr.json
suppressMessages({library(lme4); library(jsonlite)})
dir <- commandArgs(trailingOnly = TRUE)[1]
sleep <- read.csv(file.path(dir, "sleepstudy.csv"), colClasses = c(Subject = "factor"))
sleep$slow <- as.integer(sleep$Reaction > 300)  # a binary response with a per-subject trend
ticks <- read.csv(file.path(dir, "grouseticks.csv"),
                  colClasses = c(LOCATION = "factor", YEAR = "factor"))
# simulated (numpy, seed 3: 30 groups × 10 rows, the slope's effect 0.3 × the intercept's),
# read from the repository root: glmer's fit is singular, the correlation at +1
sing <- read.csv("tests/reference/glmer_corr_singular.csv", colClasses = c(g = "factor"))
ctl <- glmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 2e-4, rhoend = 2e-11,
                                                         maxfun = 1e5))
fig <- function(m) {
  vc <- VarCorr(m)[[1]]
  list(logLik = as.numeric(logLik(m)), fixef = unname(fixef(m)),
       se = unname(sqrt(diag(as.matrix(vcov(m))))),
       sd = unname(attr(vc, "stddev")), corr = attr(vc, "correlation")[2, 1])
}
out <- list(
  sleep_binary = c(list(formula = "slow ~ Days + (Days | Subject)"),
                   fig(glmer(slow ~ Days + (Days | Subject), sleep, binomial, control = ctl))),
  ticks_poisson = c(list(formula = "TICKS ~ YEAR + cHEIGHT + (1 + cHEIGHT | LOCATION)"),
                    fig(glmer(TICKS ~ YEAR + cHEIGHT + (1 + cHEIGHT | LOCATION), ticks, poisson,
                              control = ctl))),
  singular_poisson = c(list(formula = "y ~ x + (x | g)"),
                       fig(m <- glmer(y ~ x + (x | g), sing, poisson, control = ctl)),
                       list(isSingular = isSingular(m))))
cat(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "\n")
