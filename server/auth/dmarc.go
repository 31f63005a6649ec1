package auth

import (
	"context"
	"strings"

	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// OrgDomain is the organizational domain of a name (RFC 7489 3.2): its
// public suffix from the Public Suffix List plus one label. A name under
// a TLD missing from the list follows the list's default rule "*" (the
// TLD is the suffix); a name that is itself a public suffix is its own.
func OrgDomain(name string) string {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if org, ok := orgCache.get(name); ok {
		return org
	}
	org, err := publicsuffix.EffectiveTLDPlusOne(name)
	if err != nil {
		org = name
	}
	orgCache.put(name, org)
	return org
}

// orgCache maps names to their organizational domains: the answer is a
// pure function of the name (and of the list compiled in), asked for the
// same From domains message after message.
var orgCache = textCache[string]{m: make(map[string]string)}

// DMARCRecord is the policy discovered for a From domain.
type DMARCRecord struct {
	// Status is None (no record), TempError (DNS trouble), PermError (an
	// invalid record) or Pass (Record holds a valid one).
	Status Status
	Reason string
	// Domain is the From domain; At the domain whose _dmarc record
	// applies (Domain or its organizational domain).
	Domain, At string
	Record     *dmarc.Record
	// NP is the DMARCbis np= policy, for non-existent subdomains; "" when
	// absent or invalid. Missing is set when NP is and Domain, a
	// subdomain of At, does not exist (no A, AAAA or MX record).
	NP      dmarc.Policy
	Missing bool
}

// LookupDMARC discovers the DMARC policy of a From domain (RFC 7489
// 6.6.3): the TXT record at _dmarc.<domain>, else at _dmarc.<its
// organizational domain>. Several DMARC records at one name mean no
// policy (6.6.3 step 5). When the record found is the organizational
// domain's and has np=, it also looks up whether domain exists.
func LookupDMARC(ctx context.Context, r Resolver, domain string) DMARCRecord {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	rec := DMARCRecord{Domain: domain}
	at := []string{domain}
	if org := OrgDomain(domain); org != domain {
		at = append(at, org)
	}
	for _, d := range at {
		txts, err := lookupTXT(ctx, r, "_dmarc."+d)
		if err != nil && !notFound(err) {
			rec.Status, rec.Reason = TempError, "DMARC record lookup: "+normalizeErr(d, err).Error()
			return rec
		}
		found, first := 0, ""
		for _, t := range txts {
			if v, _, _ := strings.Cut(t, ";"); strings.TrimSpace(v) == "v=DMARC1" {
				if found++; found == 1 {
					first = t
				}
			}
		}
		switch found {
		case 0:
			continue
		case 1:
		default:
			rec.Status, rec.At, rec.Reason = None, d, "several DMARC records"
			return rec
		}
		rec.At = d
		p := parseDMARC(first)
		if p.err != "" {
			rec.Status, rec.Reason = PermError, p.err
			return rec
		}
		rec.Status, rec.Record = Pass, p.rec
		if p.np != "" {
			rec.NP = p.np
			rec.Missing = rec.At != domain && !exists(ctx, r, domain)
		}
		return rec
	}
	rec.Status = None
	return rec
}

// DMARCResult is the DMARC verdict for one From domain.
type DMARCResult struct {
	Status Status
	// Domain is the From domain.
	Domain string
	// Policy is what the domain asks for a failing message (p=, sp= or
	// np=, whichever applies); "" without a record.
	Policy dmarc.Policy
	Reason string
}

// EvaluateDMARC decides DMARC for a From domain whose policy is rec: pass
// when SPF passed for an aligned domain or a DKIM signature of an aligned
// domain passed (relaxed or strict as aspf/adkim say, RFC 7489 3.1); when
// neither did, temperror if an aligned SPF or DKIM check had DNS trouble
// (it might have passed), else fail. For a failing From domain below the
// organizational domain whose record applies, sp= is the policy, or np=
// (DMARCbis) when the domain does not exist (LookupDMARC found that out).
// pct= is ignored (DMARCbis drops it). EvaluateDMARC does no I/O.
func EvaluateDMARC(rec DMARCRecord, spf SPFResult, dkims []DKIMResult) DMARCResult {
	res := DMARCResult{Domain: rec.Domain, Reason: rec.Reason}
	if rec.Status != Pass {
		res.Status = rec.Status
		return res
	}
	from := rec.Domain
	spfAligned := aligned(spf.Domain, from, rec.Record.SPFAlignment)
	temp := false
	if spfAligned && spf.Status == Pass {
		res.Status = Pass
	}
	temp = spfAligned && spf.Status == TempError
	for _, d := range dkims {
		if !aligned(d.Domain, from, rec.Record.DKIMAlignment) {
			continue
		}
		if d.Status == Pass {
			res.Status = Pass
		}
		temp = temp || d.Status == TempError
	}
	res.Policy = rec.Record.Policy
	if rec.At != from {
		if rec.Record.SubdomainPolicy != "" {
			res.Policy = rec.Record.SubdomainPolicy
		}
		if rec.NP != "" && rec.Missing {
			res.Policy = rec.NP
		}
	}
	switch {
	case res.Status == Pass:
	case temp:
		res.Status, res.Reason = TempError, "an aligned check had DNS trouble"
	default:
		res.Status, res.Reason = Fail, "no aligned SPF or DKIM pass"
	}
	return res
}

// aligned reports identifier alignment of domain d with the From domain
// (RFC 7489 3.1): the same name (strict), or the same organizational
// domain (relaxed).
func aligned(d, from string, mode dmarc.AlignmentMode) bool {
	d = strings.TrimSuffix(strings.ToLower(d), ".")
	if d == "" {
		return false
	}
	if d == from {
		return true
	}
	return mode != dmarc.AlignmentStrict && OrgDomain(d) == OrgDomain(from)
}

// exists reports whether a domain exists for DMARCbis np=: it has an A,
// AAAA or MX record. DNS trouble counts as existing (the milder policy).
func exists(ctx context.Context, r Resolver, d string) bool {
	if _, err := r.LookupIPAddr(ctx, d); err == nil || !notFound(err) {
		return true
	}
	_, err := r.LookupMX(ctx, d)
	return err == nil || !notFound(err)
}

// parsedDMARC is a parsed DMARC record: the record (shared: read only),
// its DMARCbis np= policy, or the parse error.
type parsedDMARC struct {
	rec *dmarc.Record
	np  dmarc.Policy
	err string
}

// dmarcCache maps a record's text to its parse, as keyCache does keys.
var dmarcCache = textCache[parsedDMARC]{m: make(map[string]parsedDMARC)}

// parseDMARC parses a DMARC record, once per text.
func parseDMARC(txt string) parsedDMARC {
	if p, ok := dmarcCache.get(txt); ok {
		return p
	}
	var p parsedDMARC
	rec, err := dmarc.Parse(txt)
	if err != nil {
		p.err = err.Error()
	} else {
		p.rec = rec
		switch np := dmarc.Policy(parseTags(txt)["np"]); np {
		case dmarc.PolicyNone, dmarc.PolicyQuarantine, dmarc.PolicyReject:
			p.np = np
		}
	}
	dmarcCache.put(txt, p)
	return p
}
