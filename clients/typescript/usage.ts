// A small typed client of the Integration Hub API, written against the types openapi-typescript
// generates from the published bundle (build/openapi.yaml -> build/typescript/api.d.ts).
// It is type-checked with `tsc --noEmit` by tests/contract/test_generated_clients.py: when the
// contract changes in a way that breaks this code, the check fails.
import type { components, operations, paths } from "../../build/typescript/api";

type LoginRequest = paths["/auth/login"]["post"]["requestBody"]["content"]["application/json"];
type LoginResponse = paths["/auth/login"]["post"]["responses"][200]["content"]["application/json"];
type ApiError = components["schemas"]["Error"];
type CatalogQuery = NonNullable<operations["list_catalog"]["parameters"]["query"]>;
type ProviderList = paths["/integrations"]["get"]["responses"][200]["content"]["application/json"];
type Provider = components["schemas"]["IntegrationProvider"];
type Category = components["schemas"]["Category"];

export class HubError extends Error {
  constructor(readonly status: number, readonly body: ApiError) {
    super(`${body.error.code}: ${body.error.message} (request ${body.error.requestId})`);
  }
}

async function call<T>(response: Response): Promise<T> {
  if (!response.ok) throw new HubError(response.status, (await response.json()) as ApiError);
  return (await response.json()) as T;
}

/** POST /auth/login: exchange an email and a password for tokens. */
export async function login(baseUrl: string, body: LoginRequest): Promise<LoginResponse> {
  const response = await fetch(`${baseUrl}/auth/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return call<LoginResponse>(response);
}

/** GET /integrations: one page of the catalog the caller's tenant can enable. */
export async function listProviders(baseUrl: string, accessToken: string, query: CatalogQuery = {}): Promise<ProviderList> {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) if (value !== undefined) params.set(key, String(value));
  const response = await fetch(`${baseUrl}/integrations?${params}`, {
    headers: { Authorization: `Bearer ${accessToken}` },
  });
  return call<ProviderList>(response);
}

/** Sign in, then walk the whole catalog of one category, page by page. */
export async function providersOf(baseUrl: string, credentials: LoginRequest, category: Category): Promise<Provider[]> {
  const tokens = await login(baseUrl, credentials);
  const bearer: "Bearer" = tokens.tokenType;
  const found: Provider[] = [];
  let offset: number | null = 0;
  while (offset !== null) {
    const page: ProviderList = await listProviders(baseUrl, tokens.accessToken, { category, limit: 100, offset });
    found.push(...page.providers);
    offset = page.hasMore ? page.nextOffset : null;
  }
  console.log(`${bearer} ${tokens.user.email} (${tokens.user.role}) sees ${found.length} ${category} provider(s)`);
  return found;
}

// The types are the contract's, not `any`: each line below must be a type error.
// @ts-expect-error password is required by LoginRequest
export const missingPassword: LoginRequest = { email: "ada@example.com" };
// @ts-expect-error "crm_suite" is not a Category
export const unknownCategory: CatalogQuery = { category: "crm_suite" };
// @ts-expect-error limit is an integer in the query, not a string
export const textLimit: CatalogQuery = { limit: "50" };
// @ts-expect-error tenantId is a string or null, never a number
export const numericTenant: LoginResponse["user"]["tenantId"] = 42;
