//! The engine's side of governance (see [`crate::governance`]): `init_governance`, `propose`,
//! `approve`, `execute`, `cancel` and `guardian`, how a change is classified (tighten, loosen,
//! rotation) against the current state, and how it is applied.

use super::Engine;
use crate::account::Bucket;
use crate::breaker::{check_multiplier, Status};
use crate::command::{Execute, GuardianAction, Propose, SignedNonce};
use crate::error::Reject;
use crate::event::{Event, Id};
use crate::governance::{signing_bytes, verify, Change, Council, Kind, Proposal, SignedAction, MAX_PROPOSALS};
use crate::withdrawal::Gate;

impl Engine {
    /// Install the first council. Until then parameters are the venue's to set directly
    /// (`configure_withdrawals`); afterwards only through proposals.
    pub(super) fn init_governance(&mut self, council: &Council, events: &mut Vec<Event>) -> Result<(), Reject> {
        if self.governance.council.is_some() {
            return Err(Reject::GovernanceAlreadyInstalled);
        }
        council.validate()?;
        self.governance.council = Some(council.clone());
        events.push(Event::GovernanceInstalled {
            keys: council.keys.len() as u32,
            threshold: council.threshold,
            guardian: council.guardian,
        });
        Ok(())
    }

    /// Refuse a direct parameter command once governance is installed.
    pub(super) fn require_ungoverned(&self, cmd: &'static str) -> Result<(), Reject> {
        match self.governance.council {
            Some(_) => Err(Reject::Governed(cmd)),
            None => Ok(()),
        }
    }

    /// Record a proposal. Its nonce must be above every nonce used before; the change must be
    /// within its bounds and name an existing market or asset.
    pub(super) fn propose(&mut self, p: &Propose, ts: u64, events: &mut Vec<Event>) -> Result<(), Reject> {
        self.council()?;
        self.check_nonce(p.nonce)?;
        if self.governance.proposals.len() >= MAX_PROPOSALS {
            return Err(Reject::Conflict(format!("{MAX_PROPOSALS} proposals are already open")));
        }
        p.change.validate()?;
        let kind = self.classify(&p.change)?;
        // Commit.
        self.governance.last_nonce = p.nonce;
        self.governance.proposals.push(Proposal {
            nonce: p.nonce,
            change: p.change.clone(),
            proposed_ts: ts,
            approvals: Vec::new(),
            queued_ts: None,
        });
        events.push(Event::ProposalCreated { nonce: p.nonce, kind, change: Box::new(p.change.clone()) });
        Ok(())
    }

    /// One council key's approval: its signature over the proposal's canonical bytes. At the
    /// threshold the proposal is queued and its timelock starts.
    pub(super) fn approve(&mut self, a: &SignedNonce, ts: u64, events: &mut Vec<Event>) -> Result<(), Reject> {
        let council = self.council()?;
        let k = self.proposal_idx(a.nonce)?;
        let key = council.keys.iter().position(|c| *c == a.key).ok_or_else(|| Reject::UnknownKey(a.key.to_string()))?;
        let proposal = &self.governance.proposals[k];
        let key = key as u32;
        let Err(at) = proposal.approvals.binary_search(&key) else {
            return Err(Reject::DuplicateApproval { nonce: a.nonce, key: a.key.to_string() });
        };
        if !verify(&a.key, &signing_bytes(SignedAction::Approve, a.nonce, &proposal.change), &a.signature) {
            return Err(Reject::BadSignature { nonce: a.nonce });
        }
        let queue = proposal.queued_ts.is_none() && proposal.approvals.len() + 1 >= council.threshold as usize;
        let eta = ts.saturating_add(council.timelock(self.classify(&proposal.change)?));
        // Commit.
        let proposal = &mut self.governance.proposals[k];
        proposal.approvals.insert(at, key);
        events.push(Event::ProposalApproved { nonce: a.nonce, key: a.key, approvals: proposal.approvals.len() as u32 });
        if queue {
            proposal.queued_ts = Some(ts);
            events.push(Event::ProposalQueued { nonce: a.nonce, eta });
        }
        Ok(())
    }

    /// Apply a queued proposal once its timelock has passed. The timelock is that of the
    /// change's kind judged now (a change that has become a loosening since it was queued waits
    /// the long timelock), counted from when the threshold was reached.
    pub(super) fn execute_proposal(&mut self, e: &Execute, ts: u64, events: &mut Vec<Event>) -> Result<(), Reject> {
        let council = self.council()?;
        let k = self.proposal_idx(e.nonce)?;
        let proposal = &self.governance.proposals[k];
        let Some(queued) = proposal.queued_ts else {
            return Err(Reject::NotEnoughApprovals {
                nonce: e.nonce,
                have: proposal.approvals.len() as u32,
                need: council.threshold,
            });
        };
        let eta = queued.saturating_add(council.timelock(self.classify(&proposal.change)?));
        if ts < eta {
            return Err(Reject::Timelocked { nonce: e.nonce, eta, ts });
        }
        let proposal = self.governance.proposals.remove(k);
        if let Err(err) = self.apply_change(&proposal.change, ts, "council", events) {
            self.governance.proposals.insert(k, proposal);
            return Err(err);
        }
        events.push(Event::ProposalExecuted { nonce: e.nonce });
        Ok(())
    }

    /// Withdraw a proposal: any council key, signing the proposal's canonical bytes for `cancel`.
    pub(super) fn cancel(&mut self, c: &SignedNonce, events: &mut Vec<Event>) -> Result<(), Reject> {
        let council = self.council()?;
        let k = self.proposal_idx(c.nonce)?;
        if !council.keys.contains(&c.key) {
            return Err(Reject::UnknownKey(c.key.to_string()));
        }
        let change = &self.governance.proposals[k].change;
        if !verify(&c.key, &signing_bytes(SignedAction::Cancel, c.nonce, change), &c.signature) {
            return Err(Reject::BadSignature { nonce: c.nonce });
        }
        // Commit.
        self.governance.proposals.remove(k);
        events.push(Event::ProposalCancelled { nonce: c.nonce, reason: Id::from("cancelled") });
        Ok(())
    }

    /// The guardian acts at once, signed over the change's canonical bytes for `guardian`, but
    /// only to tighten: pause a market or make it reduce-only, raise its margin multiplier,
    /// close the withdrawal gate for longer.
    pub(super) fn guardian(&mut self, g: &GuardianAction, ts: u64, events: &mut Vec<Event>) -> Result<(), Reject> {
        let council = self.council()?;
        let key = council.guardian.ok_or_else(|| Reject::UnknownKey("no guardian is installed".into()))?;
        self.check_nonce(g.nonce)?;
        if !verify(&key, &signing_bytes(SignedAction::Guardian, g.nonce, &g.change), &g.signature) {
            return Err(Reject::BadSignature { nonce: g.nonce });
        }
        g.change.validate()?;
        if !g.change.guardian_may() || self.classify(&g.change)? != Kind::Tighten {
            return Err(Reject::GuardianMayOnlyTighten(g.change.name()));
        }
        self.apply_change(&g.change, ts, "guardian", events)?;
        self.governance.last_nonce = g.nonce;
        events.push(Event::GuardianActed { nonce: g.nonce, change: Box::new(g.change.clone()) });
        Ok(())
    }

    fn council(&self) -> Result<&Council, Reject> {
        self.governance.council.as_ref().ok_or(Reject::GovernanceNotInstalled)
    }

    fn check_nonce(&self, nonce: u64) -> Result<(), Reject> {
        let last = self.governance.last_nonce;
        if nonce <= last {
            return Err(Reject::StaleNonce { nonce, last });
        }
        Ok(())
    }

    fn proposal_idx(&self, nonce: u64) -> Result<usize, Reject> {
        self.governance.proposals.iter().position(|p| p.nonce == nonce).ok_or(Reject::UnknownProposal(nonce))
    }

    /// Whether `change` tightens or loosens risk against the current state (council rotation
    /// is its own kind). Equal values count as tightening (a no-op waits the short timelock).
    fn classify(&self, change: &Change) -> Result<Kind, Reject> {
        let tighten = |t: bool| if t { Kind::Tighten } else { Kind::Loosen };
        Ok(match change {
            Change::SetMarketParams { market, params } => {
                let old = &self.markets[self.market_idx(market)? as usize].params;
                tighten(params.at_least_as_strict_as(old))
            }
            Change::SetMarketStatus { market, status } => {
                let b = &self.markets[self.market_idx(market)? as usize].breaker;
                if b.manual == Status::Settlement {
                    return Err(Reject::MarketSettled(market.clone()));
                }
                tighten(*status >= b.manual)
            }
            Change::SetMarginMultiplier { market, multiplier } => {
                let b = &self.markets[self.market_idx(market)? as usize].breaker;
                tighten(*multiplier >= b.margin_multiplier)
            }
            Change::SetAssetParams { asset, params } => {
                tighten(params.at_least_as_strict_as(&self.assets[self.asset_idx(asset)? as usize].params))
            }
            Change::SetWithdrawalParams { params } => tighten(match (params, &self.withdrawals.params) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(n), Some(o)) => n.at_least_as_strict_as(o),
            }),
            Change::GateWithdrawals { until_ts } => {
                tighten(self.withdrawals.gate.as_ref().is_none_or(|g| *until_ts >= g.until))
            }
            // Either direction moves who absorbs losses: anything but a no-op waits the long
            // timelock.
            Change::SetInsuranceFund { fund, params } => {
                tighten(self.insurance[self.fund_idx(fund)?].params == *params)
            }
            Change::SetBackstop { account, loss_cap } => {
                let i = self.account_idx(account)?;
                tighten(self.backstop.is_some_and(|b| b.account == i && b.loss_cap == *loss_cap))
            }
            Change::SetCouncil { .. } => Kind::Rotation,
        })
    }

    /// Apply a change; every check runs before the first write, so an `Err` changes nothing.
    fn apply_change(&mut self, change: &Change, ts: u64, by: &str, events: &mut Vec<Event>) -> Result<(), Reject> {
        // Liquidation deadlines depend on market parameters and on the backstop.
        self.deadline_floor = 0;
        match change {
            Change::SetMarketParams { market, params } => {
                let m = self.market_idx(market)? as usize;
                let tiers = params.validate()?;
                self.check_segment(params.insurance_segment.as_deref())?;
                let market = &mut self.markets[m];
                market.params = (**params).clone();
                market.tiers = tiers;
                market.feed.forget_unlisted(&market.params.oracle);
                // New requirements move every holder's buffer: re-filed after the command.
                self.touched.extend(self.index.holders(m as u32));
            }
            Change::SetMarketStatus { market, status } => {
                let m = self.market_idx(market)? as usize;
                let market = &mut self.markets[m];
                market.breaker.set_manual(*status, ts, &market.id, events);
            }
            Change::SetMarginMultiplier { market, multiplier } => {
                let m = self.market_idx(market)? as usize;
                check_multiplier("multiplier", *multiplier)?;
                self.markets[m].breaker.margin_multiplier = *multiplier;
            }
            Change::SetAssetParams { asset, params } => {
                let a = self.asset_idx(asset)? as usize;
                params.validate()?;
                let asset = &mut self.assets[a];
                asset.params = params.clone();
                asset.feed.forget_unlisted(&asset.params.oracle);
                // New weights move the buffer of every cross book holding the asset.
                let holders = self.accounts.iter().enumerate().filter(|(_, acc)| !acc.collateral(a as u32).is_zero());
                let keys: Vec<_> = holders.map(|(i, _)| crate::detection::key(i as u32, Bucket::Cross)).collect();
                self.touched.extend(keys);
            }
            Change::SetWithdrawalParams { params } => {
                if let Some(p) = params {
                    p.validate()?;
                }
                self.withdrawals.params = params.clone();
                events.push(Event::WithdrawalParamsSet { params: params.clone() });
            }
            Change::GateWithdrawals { until_ts } => {
                self.withdrawals.gate = Some(Gate { until: *until_ts, reason: by.to_string() });
                events.push(Event::WithdrawalsGated { until: *until_ts, reason: by.to_string() });
            }
            Change::SetInsuranceFund { fund, params } => {
                let f = self.fund_idx(fund)?;
                params.validate()?;
                self.insurance[f].params = *params;
            }
            Change::SetBackstop { account, loss_cap } => self.install_backstop(account, *loss_cap, events)?,
            Change::SetCouncil { council } => {
                council.validate()?;
                self.governance.council = Some(council.clone());
                // Approvals were given by the old council: open proposals lapse.
                for p in self.governance.proposals.drain(..) {
                    events.push(Event::ProposalCancelled { nonce: p.nonce, reason: Id::from("council rotated") });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
