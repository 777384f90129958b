"""Write the project's sample fine-tuning datasets from a hand-written set of facts.

The facts below summarise EU data-protection law (GDPR, ePrivacy, the AI Act, NIS2, DORA,
the Data Act) in plain words, each with the article it comes from. They are study material for
a demo model, not legal advice. Every fact has several phrasings of the question, so that the
chat dataset has a few hundred examples while each answer stays one that a person wrote.

Run from the repository root; the output is deterministic:

    python examples/data/generate_eu_data_protection.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

SYSTEM_PROMPT = (
    "You are a careful assistant for a European organisation. You explain EU data-protection "
    "and AI rules in plain words, cite the article, and recommend checking with the data "
    "protection officer for decisions."
)

# (topic, [question phrasings], answer)
FACTS: list[tuple[str, list[str], str]] = [
    (
        "gdpr-basics",
        [
            "What is the GDPR?",
            "Which regulation is the GDPR?",
            "Since when does the GDPR apply?",
            "Give me a one-line summary of the GDPR.",
        ],
        "The General Data Protection Regulation is Regulation (EU) 2016/679. It has applied "
        "since 25 May 2018 and sets the rules for processing personal data of people in the "
        "European Union, together with the rights those people have over their data.",
    ),
    (
        "personal-data",
        [
            "What counts as personal data under the GDPR?",
            "Is an IP address personal data?",
            "How does Article 4 define personal data?",
            "Define personal data.",
        ],
        "Article 4(1) GDPR defines personal data as any information relating to an identified "
        "or identifiable natural person. A person is identifiable if they can be identified "
        "directly or indirectly, for example by a name, an identification number, location "
        "data or an online identifier. An IP address is therefore usually personal data when "
        "it can be linked to a person.",
    ),
    (
        "pseudonymous",
        [
            "Is pseudonymised data still personal data?",
            "Does the GDPR apply to anonymous data?",
            "If we hash the user ids, is the GDPR still relevant?",
            "What is the difference between pseudonymised and anonymised data?",
        ],
        "Pseudonymised data is still personal data, because it can be linked back to a person "
        "with additional information; hashing an identifier is pseudonymisation. Recital 26 "
        "explains that truly anonymous data, where the person can no longer be identified by "
        "any means reasonably likely to be used, falls outside the GDPR.",
    ),
    (
        "controller-processor",
        [
            "What is the difference between a controller and a processor?",
            "Who is the controller under the GDPR?",
            "Is our cloud provider a processor?",
            "Explain controller and processor roles.",
        ],
        "Under Article 4(7) the controller decides the purposes and means of the processing. "
        "Under Article 4(8) the processor processes personal data on behalf of the controller. "
        "A cloud provider that only runs workloads on your instructions is normally a "
        "processor, and Article 28 requires a written contract with it.",
    ),
    (
        "processor-contract",
        [
            "What must a data processing agreement contain?",
            "What does Article 28 require?",
            "Do we need a contract with our processor?",
            "Which clauses belong in a processor contract?",
        ],
        "Article 28 GDPR requires a binding contract with each processor. It must say that the "
        "processor acts only on documented instructions, keeps the data confidential, applies "
        "the security measures of Article 32, uses sub-processors only with authorisation, "
        "helps the controller answer data subject requests, deletes or returns the data at "
        "the end, and allows audits.",
    ),
    (
        "lawful-bases",
        [
            "What are the lawful bases for processing personal data?",
            "List the six legal bases of Article 6.",
            "Do we always need consent to process personal data?",
            "Which legal grounds does the GDPR allow?",
        ],
        "Article 6(1) GDPR gives six lawful bases: consent, performance of a contract, a legal "
        "obligation, vital interests, a task in the public interest, and legitimate interests. "
        "Consent is only one of them, and it is often not the most appropriate one.",
    ),
    (
        "consent",
        [
            "What makes consent valid under the GDPR?",
            "Can consent be given with a pre-ticked box?",
            "How must consent be withdrawn?",
            "What are the conditions for consent?",
        ],
        "Consent must be freely given, specific, informed and unambiguous, given by a clear "
        "affirmative act (Article 4(11)). A pre-ticked box is not valid consent. Article 7 "
        "requires the controller to be able to demonstrate consent and makes withdrawing "
        "consent as easy as giving it.",
    ),
    (
        "children",
        [
            "At what age can a child consent to an online service?",
            "What does Article 8 GDPR say about children?",
            "Do we need parental consent for teenagers?",
        ],
        "Article 8 GDPR sets the age at which a child can consent to an information society "
        "service at 16. Member States may lower it, but not below 13. Below that age, consent "
        "must be given or authorised by the holder of parental responsibility.",
    ),
    (
        "special-categories",
        [
            "What are special categories of personal data?",
            "Is health data sensitive data under the GDPR?",
            "What does Article 9 protect?",
            "Can we process biometric data?",
        ],
        "Article 9 lists special categories: racial or ethnic origin, political opinions, "
        "religious or philosophical beliefs, trade union membership, genetic data, biometric "
        "data used to identify a person, health data, and data about sex life or sexual "
        "orientation. Processing them is prohibited unless an exception in Article 9(2) "
        "applies, such as explicit consent.",
    ),
    (
        "principles",
        [
            "What are the principles of the GDPR?",
            "List the Article 5 principles.",
            "Which principles govern processing of personal data?",
            "What does accountability mean in the GDPR?",
        ],
        "Article 5 GDPR sets seven principles: lawfulness, fairness and transparency; purpose "
        "limitation; data minimisation; accuracy; storage limitation; integrity and "
        "confidentiality; and accountability, which means the controller must be able to "
        "demonstrate compliance with the other six.",
    ),
    (
        "minimisation",
        [
            "What is data minimisation?",
            "How much personal data may we collect?",
            "Should a training dataset contain names and emails?",
            "How does data minimisation apply to machine learning?",
        ],
        "Data minimisation (Article 5(1)(c)) means personal data must be adequate, relevant and "
        "limited to what is necessary for the purpose. For machine learning, remove direct "
        "identifiers such as names and email addresses from training data unless the purpose "
        "truly needs them, and prefer pseudonymised or aggregated data.",
    ),
    (
        "storage-limitation",
        [
            "How long may we keep personal data?",
            "What is storage limitation?",
            "Is there a fixed retention period in the GDPR?",
        ],
        "The GDPR sets no fixed retention period. Storage limitation (Article 5(1)(e)) says "
        "data may be kept in identifiable form no longer than necessary for the purposes. Set "
        "a retention period per purpose, document it, and delete or anonymise data when it "
        "ends.",
    ),
    (
        "transparency",
        [
            "What must we tell people when we collect their data?",
            "What goes into a privacy notice?",
            "What do Articles 13 and 14 require?",
        ],
        "Articles 13 and 14 require telling people who the controller is, the contact of the "
        "data protection officer, the purposes and lawful basis, the recipients, any transfer "
        "outside the EEA, the retention period, their rights, the right to complain to a "
        "supervisory authority, and whether automated decision-making is used.",
    ),
    (
        "access",
        [
            "How long do we have to answer a subject access request?",
            "What is the right of access?",
            "A customer asked for a copy of their data. What now?",
            "Can we extend the deadline for a data subject request?",
        ],
        "Article 15 gives people the right to a copy of their personal data and information "
        "about the processing. Article 12(3) requires an answer without undue delay and at the "
        "latest within one month; this can be extended by two further months for complex or "
        "numerous requests, if the person is told within the first month.",
    ),
    (
        "rectification",
        [
            "What is the right to rectification?",
            "A user says their address is wrong. Must we fix it?",
        ],
        "Article 16 GDPR gives people the right to have inaccurate personal data corrected "
        "without undue delay, and incomplete data completed.",
    ),
    (
        "erasure",
        [
            "What is the right to be forgotten?",
            "When must we delete personal data on request?",
            "Does the right to erasure always apply?",
            "Explain Article 17.",
        ],
        "Article 17 gives a right to erasure, for example when the data is no longer necessary, "
        "consent is withdrawn, the person successfully objects, or the processing was unlawful. "
        "It is not absolute: exceptions include freedom of expression, legal obligations, and "
        "the establishment or defence of legal claims.",
    ),
    (
        "restriction",
        [
            "What is the right to restriction of processing?",
            "When can a person ask us to restrict processing?",
        ],
        "Article 18 lets a person have processing restricted, so the data is stored but not "
        "otherwise used, for example while the accuracy of the data is contested or while an "
        "objection is being assessed.",
    ),
    (
        "portability",
        [
            "What is data portability?",
            "In what format must we export a user's data?",
            "Does the right to data portability always apply?",
        ],
        "Article 20 gives a right to receive one's data in a structured, commonly used and "
        "machine-readable format and to have it transmitted to another controller. It applies "
        "when processing is based on consent or a contract and is carried out by automated "
        "means.",
    ),
    (
        "objection",
        [
            "Can a person object to direct marketing?",
            "What is the right to object?",
            "What happens when someone objects to processing based on legitimate interests?",
        ],
        "Article 21 gives a right to object to processing based on legitimate interests or a "
        "public task; the controller must stop unless it shows compelling legitimate grounds. "
        "For direct marketing the right is absolute: once the person objects, the data may no "
        "longer be used for marketing.",
    ),
    (
        "automated-decisions",
        [
            "Can an algorithm decide on a loan application alone?",
            "What does Article 22 GDPR say about automated decisions?",
            "Is profiling allowed under the GDPR?",
            "Do people have a right to human review of automated decisions?",
        ],
        "Article 22 gives people the right not to be subject to a decision based solely on "
        "automated processing, including profiling, that has legal or similarly significant "
        "effects. It is allowed only when necessary for a contract, authorised by law, or "
        "based on explicit consent, and then the person can obtain human intervention, express "
        "their view and contest the decision.",
    ),
    (
        "by-design",
        [
            "What is data protection by design and by default?",
            "What does Article 25 require from engineers?",
        ],
        "Article 25 requires building data protection into systems from the start, for example "
        "with pseudonymisation and minimisation, and configuring them so that by default only "
        "the personal data necessary for each purpose is processed.",
    ),
    (
        "records",
        [
            "Do we need a record of processing activities?",
            "What is the Article 30 register?",
            "Are small companies exempt from keeping processing records?",
        ],
        "Article 30 requires controllers and processors to keep a written record of processing "
        "activities. Organisations with fewer than 250 employees are exempt only if the "
        "processing is occasional, unlikely to result in a risk, and does not include special "
        "categories or criminal-offence data.",
    ),
    (
        "security",
        [
            "What security measures does the GDPR require?",
            "Is encryption mandatory under the GDPR?",
            "What does Article 32 say?",
        ],
        "Article 32 requires appropriate technical and organisational measures for a level of "
        "security suited to the risk, such as pseudonymisation and encryption, ongoing "
        "confidentiality, integrity, availability and resilience, the ability to restore "
        "access after an incident, and regular testing. Encryption is not mandatory in every "
        "case, but it is named as an example.",
    ),
    (
        "breach-authority",
        [
            "How fast must we report a personal data breach?",
            "When do we notify the supervisory authority of a breach?",
            "What is the 72-hour rule?",
            "We lost a laptop with customer data. What is the deadline?",
        ],
        "Article 33 requires the controller to notify the competent supervisory authority "
        "without undue delay and, where feasible, within 72 hours of becoming aware of a "
        "personal data breach, unless the breach is unlikely to result in a risk to people. "
        "A processor must inform the controller without undue delay.",
    ),
    (
        "breach-subjects",
        [
            "Do we have to inform customers about a data breach?",
            "When must data subjects be told about a breach?",
            "If the stolen data was encrypted, must we notify the people affected?",
        ],
        "Article 34 requires informing the people affected without undue delay when a breach is "
        "likely to result in a high risk to their rights and freedoms. This is not required if "
        "the data was made unintelligible, for example by strong encryption whose key was not "
        "compromised.",
    ),
    (
        "dpia",
        [
            "When is a data protection impact assessment required?",
            "What is a DPIA?",
            "Do we need a DPIA before training a model on customer data?",
            "What does Article 35 require?",
        ],
        "Article 35 requires a data protection impact assessment before processing that is "
        "likely to result in a high risk, in particular systematic and extensive profiling with "
        "significant effects, large-scale processing of special categories, or large-scale "
        "systematic monitoring of public areas. Training a model on large volumes of customer "
        "data often meets these criteria, so assess it early.",
    ),
    (
        "dpo",
        [
            "When must an organisation appoint a data protection officer?",
            "Do we need a DPO?",
            "What does Article 37 say about DPOs?",
        ],
        "Article 37 requires a data protection officer for public authorities, and for "
        "organisations whose core activities involve regular and systematic monitoring of "
        "people on a large scale, or large-scale processing of special categories or criminal "
        "convictions data.",
    ),
    (
        "transfers",
        [
            "Can we transfer personal data outside the EU?",
            "What are the rules for international data transfers?",
            "What does Chapter V of the GDPR cover?",
            "Can we use a US cloud region for EU customer data?",
        ],
        "Chapter V allows transfers outside the EEA only with an adequacy decision (Article "
        "45), appropriate safeguards such as standard contractual clauses or binding corporate "
        "rules (Articles 46 and 47), or a narrow derogation (Article 49). Keeping data and "
        "compute in EU regions avoids the transfer question altogether.",
    ),
    (
        "schrems",
        [
            "What was Schrems II?",
            "Is the Privacy Shield still valid?",
            "What is a transfer impact assessment?",
        ],
        "In Schrems II (case C-311/18, July 2020) the Court of Justice invalidated the EU-US "
        "Privacy Shield and held that standard contractual clauses remain valid only if the "
        "exporter checks, case by case, that the destination country's law allows the "
        "protection they promise, adding supplementary measures where needed. That check is "
        "called a transfer impact assessment.",
    ),
    (
        "dpf",
        [
            "What is the EU-US Data Privacy Framework?",
            "Is there an adequacy decision for the United States?",
        ],
        "On 10 July 2023 the European Commission adopted an adequacy decision for the EU-US "
        "Data Privacy Framework. It covers transfers only to US organisations that have "
        "self-certified under the framework; transfers to others still need safeguards such "
        "as standard contractual clauses.",
    ),
    (
        "fines",
        [
            "What are the maximum GDPR fines?",
            "How much can a regulator fine us under the GDPR?",
            "What does Article 83 say about fines?",
        ],
        "Article 83 sets two tiers. The higher tier is up to 20 million euros or 4% of total "
        "worldwide annual turnover of the preceding financial year, whichever is higher; the "
        "lower tier is up to 10 million euros or 2%.",
    ),
    (
        "territorial",
        [
            "Does the GDPR apply to companies outside the EU?",
            "What is the territorial scope of the GDPR?",
            "We are based in Canada and sell to German customers. Does the GDPR apply?",
        ],
        "Article 3 applies the GDPR to processing in the context of an establishment in the "
        "Union, and to controllers outside the Union that offer goods or services to people in "
        "the Union or monitor their behaviour there. Such controllers must usually appoint a "
        "representative in the Union (Article 27).",
    ),
    (
        "eea",
        [
            "Does the GDPR apply in Norway?",
            "Which countries apply the GDPR?",
        ],
        "The GDPR applies in the 27 EU Member States and, through the EEA Agreement, in "
        "Iceland, Liechtenstein and Norway.",
    ),
    (
        "residency",
        [
            "Does the GDPR require data to stay in the EU?",
            "Is data residency a GDPR requirement?",
        ],
        "No. The GDPR does not require personal data to be stored in the EU; it restricts "
        "transfers outside the EEA to those with an adequacy decision or appropriate "
        "safeguards. Many organisations choose EU residency anyway, because it removes the "
        "need for transfer assessments and keeps data under EU jurisdiction.",
    ),
    (
        "legitimate-interest",
        [
            "How do we rely on legitimate interests?",
            "What is the legitimate interests balancing test?",
            "Can we use legitimate interests for product analytics?",
        ],
        "Legitimate interests (Article 6(1)(f)) need a three-part test: identify a legitimate "
        "purpose, show the processing is necessary for it, and balance it against the "
        "person's interests, rights and reasonable expectations. Document the assessment; if "
        "the person's interests override yours, choose another basis or do not process.",
    ),
    (
        "joint-controllers",
        [
            "What are joint controllers?",
            "What does Article 26 GDPR require?",
        ],
        "When two or more controllers jointly decide the purposes and means of processing, "
        "Article 26 makes them joint controllers. They must set out their respective "
        "responsibilities in an arrangement whose essence is made available to the people "
        "concerned, who can exercise their rights against each of them.",
    ),
    (
        "one-stop-shop",
        [
            "What is the one-stop-shop mechanism?",
            "Which supervisory authority is responsible for us?",
            "What is a lead supervisory authority?",
        ],
        "For cross-border processing, Article 56 makes the supervisory authority of the "
        "controller's main establishment the lead authority, which cooperates with the other "
        "authorities concerned. The European Data Protection Board (Article 68) ensures "
        "consistent application across the Union.",
    ),
    (
        "complaint",
        [
            "Where can a person complain about how their data is used?",
            "What is the right to lodge a complaint?",
        ],
        "Article 77 gives every person the right to lodge a complaint with a supervisory "
        "authority, in particular in the Member State of their habitual residence, place of "
        "work or place of the alleged infringement.",
    ),
    (
        "cookies",
        [
            "Do we need consent for cookies?",
            "Which rule covers cookies, the GDPR or the ePrivacy Directive?",
            "Are analytics cookies strictly necessary?",
        ],
        "Article 5(3) of the ePrivacy Directive (2002/58/EC) requires consent before storing or "
        "reading information on a user's device, unless it is strictly necessary for the "
        "service the user asked for. Analytics and advertising cookies are generally not "
        "strictly necessary, and the consent must meet the GDPR standard.",
    ),
    (
        "ai-act-basics",
        [
            "What is the EU AI Act?",
            "When did the AI Act enter into force?",
            "Which regulation is the AI Act?",
            "How does the AI Act classify AI systems?",
        ],
        "The AI Act is Regulation (EU) 2024/1689. It entered into force on 1 August 2024 and "
        "takes a risk-based approach: unacceptable-risk practices are prohibited, high-risk "
        "systems carry strict requirements, some systems carry transparency duties, and "
        "minimal-risk systems carry no new obligations.",
    ),
    (
        "ai-act-timeline",
        [
            "When do the AI Act's obligations apply?",
            "What is the AI Act timeline?",
            "When do the rules for high-risk AI systems apply?",
            "From when are AI Act prohibitions enforceable?",
        ],
        "Prohibited practices and the AI literacy duty apply from 2 February 2025; obligations "
        "for general-purpose AI models from 2 August 2025; most other rules, including "
        "high-risk systems listed in Annex III, from 2 August 2026; and high-risk systems "
        "embedded in products under Annex I from 2 August 2027.",
    ),
    (
        "ai-prohibited",
        [
            "Which AI practices are prohibited in the EU?",
            "Is social scoring allowed under the AI Act?",
            "Can we use emotion recognition on employees?",
            "What does Article 5 of the AI Act prohibit?",
        ],
        "Article 5 of the AI Act prohibits, among others, manipulative or deceptive techniques "
        "that cause significant harm, exploiting vulnerabilities, social scoring, predicting "
        "crime solely from profiling, untargeted scraping of facial images for recognition "
        "databases, emotion recognition in workplaces and schools except for medical or "
        "safety reasons, biometric categorisation to infer sensitive traits, and real-time "
        "remote biometric identification in public spaces for law enforcement, save narrow "
        "exceptions.",
    ),
    (
        "ai-literacy",
        [
            "What is the AI literacy obligation?",
            "Do staff need AI training under the AI Act?",
        ],
        "Article 4 of the AI Act requires providers and deployers to take measures to ensure a "
        "sufficient level of AI literacy among staff who operate or use AI systems on their "
        "behalf, taking into account their knowledge and the context of use. It applies from "
        "2 February 2025.",
    ),
    (
        "ai-high-risk",
        [
            "What counts as a high-risk AI system?",
            "Is a CV screening tool high-risk?",
            "Which areas does Annex III cover?",
            "Is credit scoring with AI high-risk?",
        ],
        "Annex III lists high-risk areas: biometrics, critical infrastructure, education and "
        "vocational training, employment and worker management (including CV screening), "
        "access to essential private and public services (including credit scoring), law "
        "enforcement, migration and border control, and the administration of justice and "
        "democratic processes.",
    ),
    (
        "ai-provider-duties",
        [
            "What must a provider of a high-risk AI system do?",
            "What are the requirements for high-risk AI?",
            "Which articles set the high-risk requirements?",
        ],
        "Providers of high-risk systems need a risk management system (Article 9), data "
        "governance (Article 10), technical documentation (Article 11), automatic logging "
        "(Article 12), transparency towards deployers (Article 13), human oversight (Article "
        "14), and accuracy, robustness and cybersecurity (Article 15), plus a quality "
        "management system, a conformity assessment, CE marking and registration in the EU "
        "database.",
    ),
    (
        "ai-data-governance",
        [
            "What does the AI Act require of training data?",
            "What is Article 10 of the AI Act about?",
            "Can we use sensitive data to detect bias?",
        ],
        "Article 10 requires training, validation and testing data for high-risk systems to be "
        "relevant, sufficiently representative and, to the best extent possible, free of "
        "errors and complete, with attention to possible biases. Article 10(5) allows special "
        "categories of data strictly for bias detection and correction, with safeguards such "
        "as pseudonymisation and deletion afterwards.",
    ),
    (
        "ai-deployers",
        [
            "What must a deployer of a high-risk AI system do?",
            "How long must deployers keep AI system logs?",
            "What is a fundamental rights impact assessment?",
        ],
        "Article 26 requires deployers to use high-risk systems according to the instructions, "
        "assign human oversight to competent people, monitor operation, and keep the "
        "automatically generated logs for at least six months. Article 27 requires public "
        "bodies and some private deployers, such as those assessing creditworthiness, to carry "
        "out a fundamental rights impact assessment first.",
    ),
    (
        "ai-transparency",
        [
            "Must users be told they are talking to a chatbot?",
            "What are the AI Act's transparency obligations?",
            "Do AI-generated images have to be labelled?",
        ],
        "Article 50 requires that people are told when they interact with an AI system unless "
        "it is obvious, that synthetic audio, image, video and text output is marked in a "
        "machine-readable way, and that deployers disclose deepfakes and AI-generated text "
        "published to inform the public on matters of public interest.",
    ),
    (
        "gpai",
        [
            "What are the obligations for general-purpose AI models?",
            "What must a GPAI provider publish?",
            "Does the AI Act cover foundation models?",
        ],
        "Article 53 requires providers of general-purpose AI models to keep technical "
        "documentation, give information to downstream providers, put in place a policy to "
        "comply with EU copyright law, and publish a sufficiently detailed summary of the "
        "content used for training.",
    ),
    (
        "gpai-systemic",
        [
            "When does a GPAI model have systemic risk?",
            "What is the 10^25 FLOP threshold?",
            "What extra duties apply to models with systemic risk?",
        ],
        "Article 51 presumes systemic risk when the cumulative training compute exceeds 10^25 "
        "floating-point operations. Article 55 then adds model evaluation including "
        "adversarial testing, assessment and mitigation of systemic risks, reporting of "
        "serious incidents to the AI Office, and adequate cybersecurity.",
    ),
    (
        "ai-modification",
        [
            "Do we become a provider if we fine-tune someone else's model?",
            "When does a deployer become a provider under the AI Act?",
        ],
        "Under Article 25, a distributor, importer, deployer or other third party becomes the "
        "provider of a high-risk AI system if it puts its name on it, makes a substantial "
        "modification, or changes its intended purpose so that it becomes high-risk. Record "
        "what a fine-tune changed and for which purpose.",
    ),
    (
        "ai-fines",
        [
            "What are the AI Act's maximum fines?",
            "How much can a breach of the AI Act cost?",
        ],
        "Article 99 sets fines of up to 35 million euros or 7% of worldwide annual turnover for "
        "prohibited practices, up to 15 million euros or 3% for most other obligations, and up "
        "to 7.5 million euros or 1% for supplying incorrect or misleading information, "
        "whichever is higher; for SMEs the lower amount applies.",
    ),
    (
        "ai-office",
        [
            "Who supervises general-purpose AI models?",
            "What is the AI Office?",
        ],
        "The AI Office, part of the European Commission, supervises and enforces the rules on "
        "general-purpose AI models. National market surveillance authorities supervise most "
        "other AI systems.",
    ),
    (
        "gdpr-and-ai",
        [
            "Does the GDPR apply when we train an AI model on personal data?",
            "Does the AI Act replace the GDPR?",
            "Which lawful basis do we need to fine-tune a model on support tickets?",
        ],
        "Yes. The AI Act applies alongside the GDPR and does not replace it. Training or "
        "fine-tuning on personal data is processing, so it needs a lawful basis, often "
        "legitimate interests after a documented balancing test, and it must respect "
        "minimisation, transparency and the rights of the people concerned.",
    ),
    (
        "nis2",
        [
            "What is NIS2?",
            "What are the NIS2 incident reporting deadlines?",
            "When did NIS2 have to be transposed?",
        ],
        "NIS2 is Directive (EU) 2022/2555 on cybersecurity, which Member States had to transpose "
        "by 17 October 2024. For significant incidents it requires an early warning within 24 "
        "hours, an incident notification within 72 hours, and a final report within one month.",
    ),
    (
        "dora",
        [
            "What is DORA?",
            "When does DORA apply?",
        ],
        "DORA, the Digital Operational Resilience Act, is Regulation (EU) 2022/2554. It has "
        "applied since 17 January 2025 and sets ICT risk management, incident reporting, "
        "resilience testing and third-party risk rules for financial entities, including "
        "oversight of critical ICT providers such as cloud services.",
    ),
    (
        "data-act",
        [
            "What is the EU Data Act?",
            "When does the Data Act apply?",
            "Does the Data Act help with switching cloud providers?",
        ],
        "The Data Act is Regulation (EU) 2023/2854. It applies from 12 September 2025 and gives "
        "users access to data generated by connected products, and it obliges cloud and edge "
        "providers to make switching between providers possible, phasing out switching "
        "charges.",
    ),
    (
        "audit-evidence",
        [
            "How can we show where a model was trained?",
            "What evidence should we keep for a fine-tuned model?",
            "What lineage should a model registry record?",
        ],
        "Keep evidence that ties the model to its inputs and its place of work: the base model "
        "and revision, the dataset location and its sha256, the job that produced it and who "
        "requested it, the nodes and regions where it ran, and the hyperparameters. This "
        "supports the accountability principle of Article 5(2) GDPR and the AI Act's "
        "documentation duties.",
    ),
]

# Follow-up turns that make some examples multi-turn.
FOLLOW_UPS: list[tuple[str, str]] = [
    (
        "Who should we ask inside the company?",
        "Ask your data protection officer, or the person responsible for data protection, and "
        "record the decision and its reasons so you can demonstrate compliance later.",
    ),
    (
        "Is this legal advice?",
        "No. This is a plain-language summary of the rules. For a decision with legal effect, "
        "ask your data protection officer or legal counsel.",
    ),
    (
        "Where can I read the text?",
        "The official texts are published in the Official Journal of the European Union and "
        "are available in all EU languages on EUR-Lex.",
    ),
]

PREFIXES = ["", "Quick question: ", "For our compliance review: "]


def chat_examples(rng: random.Random) -> list[dict[str, object]]:
    """One example per (fact, phrasing, prefix), some with a system prompt or a follow-up."""
    rows: list[dict[str, object]] = []
    for _topic, questions, answer in FACTS:
        for qi, question in enumerate(questions):
            for pi, prefix in enumerate(PREFIXES):
                text = prefix + (question[0].lower() + question[1:] if prefix else question)
                messages: list[dict[str, str]] = []
                if (qi + pi) % 3 == 0:
                    messages.append({"role": "system", "content": SYSTEM_PROMPT})
                messages.append({"role": "user", "content": text})
                messages.append({"role": "assistant", "content": answer})
                if (qi + pi) % 5 == 4:
                    follow_q, follow_a = FOLLOW_UPS[(qi + pi) % len(FOLLOW_UPS)]
                    messages.append({"role": "user", "content": follow_q})
                    messages.append({"role": "assistant", "content": follow_a})
                rows.append({"messages": messages})
    rng.shuffle(rows)
    return rows


def instruct_examples(rng: random.Random) -> list[dict[str, str]]:
    """prompt/completion pairs: the first phrasing of each fact."""
    rows = [{"prompt": questions[0], "completion": answer} for _t, questions, answer in FACTS]
    rng.shuffle(rows)
    return rows


def text_examples() -> list[dict[str, str]]:
    """Plain text: each answer as a paragraph."""
    return [{"text": answer} for _t, _q, answer in FACTS]


def write_jsonl(path: Path, rows: list[dict[str, object]] | list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def main() -> None:
    rng = random.Random(20240801)
    write_jsonl(HERE / "eu-data-protection-chat.jsonl", chat_examples(rng))
    write_jsonl(HERE / "eu-data-protection-instruct.jsonl", instruct_examples(rng))
    write_jsonl(HERE / "eu-data-protection-text.jsonl", text_examples())


if __name__ == "__main__":
    main()
