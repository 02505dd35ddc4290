# Negative binomial (NB2) GLMM reference for bayesglmm's NegativeBinomialBayesMixedGLM
# (tests/models/test_negbin.py): glmmTMB's nbinom2 and lme4's glmer.nb on grouseticks,
#   TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION)
# without the observation-level (1 | INDEX) term, which is confounded with the dispersion.
# YEAR, BROOD and LOCATION are factors; cHEIGHT is the centred HEIGHT column of the csv.
# Regenerate with
#   Rscript tests/reference/glmmtmb_nb_grouseticks.R /work/shared/data \
#     > tests/reference/glmmtmb_nb_grouseticks.json
suppressMessages({library(glmmTMB); library(lme4); library(jsonlite)})
dir <- commandArgs(trailingOnly = TRUE)[1]
gt <- read.csv(file.path(dir, "grouseticks.csv"),
               colClasses = c(INDEX = "factor", BROOD = "factor", YEAR = "factor",
                              LOCATION = "factor"))
form <- TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION)

# glmmTMB with its default control (nlminb; tightening rel.tol to 1e-14 ends in "singular
# convergence" at the same estimates)
tmb <- glmmTMB(form, data = gt, family = nbinom2)
sd_tmb <- sapply(VarCorr(tmb)$cond, function(v) attr(v, "stddev"))
names(sd_tmb) <- names(VarCorr(tmb)$cond)
fe_tmb <- fixef(tmb)$cond
se_tmb <- sqrt(diag(vcov(tmb)$cond))
# the maximised parameters: beta, theta (log SDs), betad (log of the NB2 dispersion)
par <- tmb$fit$par
glmmtmb <- list(
  software = paste("glmmTMB", as.character(packageVersion("glmmTMB")),
                   "TMB", as.character(packageVersion("TMB"))),
  family = "nbinom2", method = "Laplace maximum likelihood",
  fixef = as.list(fe_tmb), fixef_se = as.list(se_tmb),
  sd = as.list(sd_tmb), sigma = sigma(tmb), log_sigma = unname(par[names(par) == "betad"]),
  log_sigma_se = unname(sqrt(diag(tmb$sdr$cov.fixed))[names(par) == "betad"]),
  logLik = as.numeric(logLik(tmb)), convergence = tmb$fit$convergence,
  max_abs_gradient = max(abs(tmb$sdr$gradient.fixed))
)

# lme4's glmer.nb (alternates glmer at fixed theta with a 1-D optimisation of theta)
nb <- tryCatch({
  t0 <- proc.time()[["elapsed"]]
  g <- suppressWarnings(glmer.nb(form, data = gt,
                                 control = glmerControl(optimizer = "bobyqa",
                                                        optCtrl = list(rhoend = 1e-10))))
  sd_g <- sapply(VarCorr(g), function(v) attr(v, "stddev"))
  names(sd_g) <- names(VarCorr(g))
  list(software = paste("lme4", as.character(packageVersion("lme4"))),
       fixef = as.list(fixef(g)), fixef_se = as.list(sqrt(diag(as.matrix(vcov(g))))),
       sd = as.list(sd_g), theta = getME(g, "glmer.nb.theta"),
       logLik = as.numeric(logLik(g)), seconds = proc.time()[["elapsed"]] - t0)
}, error = function(e) list(error = conditionMessage(e)))

out <- list(
  formula = "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION)",
  data = "grouseticks.csv", nobs = nrow(gt),
  note = paste("NB2: Var = mu + mu^2/theta; glmmTMB's sigma(fit) is theta for nbinom2;",
               "YEAR, BROOD, LOCATION categorical; logLik includes all constants"),
  R = R.version.string, glmmtmb = glmmtmb, glmer_nb = nb
)
cat(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "\n")
